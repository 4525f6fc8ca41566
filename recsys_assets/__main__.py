import sys

from recsys_assets.cli import main

sys.exit(main())
