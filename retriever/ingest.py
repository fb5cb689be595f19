"""``python -m retriever.ingest``: the ingest CLI under its old name (see ``retriever.cli``)."""

from __future__ import annotations

import sys

from retriever.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
