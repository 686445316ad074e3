"""`python -m jobpulse.cli`: the `jobpulse` command."""

import sys

from jobpulse.cli import main

sys.exit(main())
