"""`python -m coldharbour.cli`: the same as the `chmgr` script."""

from __future__ import annotations

import sys

from coldharbour.cli import main

if __name__ == "__main__":
    sys.exit(main())
