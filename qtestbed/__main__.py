"""`python -m qtestbed` is the same as the `qtestbed` console script."""

import sys

from qtestbed.cli.main import main

sys.exit(main())
