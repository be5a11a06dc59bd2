"""``python -m corediff`` runs the command line."""

import sys

from corediff.cli import main

sys.exit(main())
