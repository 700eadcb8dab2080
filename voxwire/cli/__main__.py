"""``python -m voxwire.cli``: the same as the ``voxwire`` console script."""

from __future__ import annotations

import sys

from voxwire.cli import main

sys.exit(main())
