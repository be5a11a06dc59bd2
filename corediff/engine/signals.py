"""Stopping training cleanly on SIGINT and SIGTERM (what Ctrl-C and schedulers such as SLURM
send before killing a job).

The first signal asks the trainer to finish its current step, write ``last`` atomically and
exit with 128 + the signal number (130 for SIGINT, 143 for SIGTERM); a second signal of the
same kind aborts at once (the atomic checkpoint writes keep the previous ``last`` intact).

SLURM (``--signal=TERM@120``, ``scancel``) and a terminal's Ctrl-C signal the whole process
group, DataLoader workers included: :func:`ignore_in_worker` (their ``worker_init_fn``) makes
the workers ignore both signals, so they keep serving batches until the trainer has saved
``last`` and shuts them down; a worker whose trainer died exits on its own (PyTorch's
watchdog polls the parent).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class GracefulStop:
    """Context manager recording the first stop signal; handlers are installed only in the
    main thread (elsewhere Python does not deliver signals) and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # the second signal: abort now, by the default action
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        print(f"\ncorediff: {signal.Signals(signum).name} received: finishing this step and "
              "saving 'last' (send it again to abort at once)", file=sys.stderr, flush=True)


def ignore_in_worker(worker_id: int) -> None:
    """A DataLoader ``worker_init_fn``: the stop signals are the main process's to handle
    (PyTorch installs a SIGTERM handler in each worker that kills it)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
