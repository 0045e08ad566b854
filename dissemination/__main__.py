"""`python -m dissemination` runs the CLI."""

import sys

from dissemination.cli import main

sys.exit(main())
