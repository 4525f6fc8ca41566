"""``python -m recsys_assets``: the command line (``recsys_assets.cli``)."""

import sys

from recsys_assets.cli import main

sys.exit(main())
