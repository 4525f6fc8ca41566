"""``python -m recsys_assets.config --markdown``: the table of every environment variable, from
its declaration (:mod:`recsys_assets.config.variables`); ``--write-docs`` rewrites it in
docs/configuration.md."""

from recsys_assets.config.variables import main

raise SystemExit(main())
