"""``python -m wildmix ...``: the same command line as ``wildmix ...``."""

import sys

from wildmix.cli import main

sys.exit(main())
