"""`python -m flows.cli ARGS`: `energy-loop ARGS` from a checkout (the CI retraining job runs it so)."""

import sys

from flows.cli import main

sys.exit(main())
