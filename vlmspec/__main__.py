"""`python -m vlmspec ...` runs the `vlmspec` command line."""

import sys

from vlmspec.cli import main

sys.exit(main())
