"""`python -m benchmarks.load [OPTIONS]`: see benchmarks/load/__init__.py."""

import sys

from benchmarks.load.cli import main

sys.exit(main())
