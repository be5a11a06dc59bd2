"""The ``corediff`` command handlers, one module per command; the argparse parser in
:mod:`corediff.cli` imports a module only when its command runs. A command module never
imports another one: what several of them share lives in :mod:`corediff.engine` and
:mod:`corediff.evaluation`.

OpenMP threads sleep rather than spin while waiting (OMP_WAIT_POLICY=PASSIVE unless set): on
a CPU shared with other work, spinning threads made small-model steps ~25× slower. OpenMP
reads the variable once, when torch is first imported, so it is set here: importing any
command module runs this package's ``__init__`` first, before that module's own imports.
Keep this file free of any other import (``corediff plugins list`` imports no torch).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
