"""Ingest files from the command line: ``python -m retriever.cli PATH... [--collection C]``.

Directories are walked for the supported types. A file that cannot be ingested is
reported with the reason and the rest of the batch goes on; the exit status is 1 if any
file failed. Uses the same settings (``DATA_DIR``, ``QDRANT_URL``...) as the API, so it
must not run while the API holds the local-mode Qdrant storage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from pathlib import Path

from retriever.errors import IngestError
from retriever.parsing import SUFFIXES
from retriever.settings import get_settings

logger = logging.getLogger(__name__)


def expand(paths: Iterable[Path]) -> list[Path]:
    """Files named, plus supported files under directories named (sorted)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
            )
        else:
            files.append(path)
    return files


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(prog="python -m retriever.cli", description=__doc__)
    parser.add_argument("paths", nargs="+", type=Path, help="files or directories")
    parser.add_argument("--collection", default="default", help="collection to put them in")
    parser.add_argument("--owner", default="local", help="user id that owns the documents")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from tqdm import tqdm

    from retriever.qdrant import QdrantBusy, open_client
    from retriever.service import Retriever

    settings = get_settings()
    files = expand(args.paths)
    try:
        client = open_client(settings)
    except QdrantBusy as exc:
        parser.exit(2, f"error: {exc}\n")
    failed = 0
    try:
        retriever = Retriever(client, settings)
        for path in tqdm(files, desc="ingesting", unit="file"):
            try:
                result = retriever.ingest_file(path, owner=args.owner, collection=args.collection)
            except IngestError as exc:
                failed += 1
                logger.error("skipped %s", exc)
                continue
            logger.info(
                "%s: %s (%d chunks, id %s)", path, result.status, result.chunks, result.document_id
            )
    finally:
        client.close()
    logger.info("%d of %d files ingested into %r", len(files) - failed, len(files), args.collection)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
