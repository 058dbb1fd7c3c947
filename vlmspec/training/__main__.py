"""`python -m vlmspec.training --config CONFIG.json ...` (also what `accelerate launch -m` runs)."""

import sys

from .cli import main

sys.exit(main())
