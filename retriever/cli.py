"""Ingest files from the command line: ``python -m retriever.cli PATH... [--collection C]``.

Directories are walked for the supported types. A file that cannot be ingested is
reported with the reason and the rest of the batch goes on; the exit status is 1 if any
file failed. Files are parsed by worker threads while the previous batch is embedded, and
ingested in batches (one embedding run and few Qdrant writes per batch), so a folder goes
in at about the embedder's speed. Uses the same settings (``DATA_DIR``, ``QDRANT_URL``...)
as the API, so it must not run while the API holds the local-mode Qdrant storage.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from retriever.errors import IngestError
from retriever.parsing import SUFFIXES, ParsedDocument, parse_file
from retriever.results import IngestResult
from retriever.settings import get_settings

if TYPE_CHECKING:
    from retriever.service import Retriever

logger = logging.getLogger(__name__)
_BATCH = 64  # files per ingest call: one embedding run, a few Qdrant writes
_PARSERS = 2  # parsing threads (pymupdf works outside the GIL for much of a PDF)


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


def parsed_batches(
    files: list[Path], max_bytes: int, size: int = _BATCH
) -> Iterator[list[tuple[Path, ParsedDocument | IngestError]]]:
    """Files parsed in batches of ``size``, the next batch parsing while one is handed out.

    A file that cannot be parsed comes back as its ``IngestError``.
    """

    def parse(path: Path) -> ParsedDocument | IngestError:
        try:
            return parse_file(path, max_bytes)
        except IngestError as exc:
            return exc

    with ThreadPoolExecutor(_PARSERS, thread_name_prefix="parse") as pool:
        batches = [files[i : i + size] for i in range(0, len(files), size)]
        ahead = [[pool.submit(parse, p) for p in batch] for batch in batches[:1]]
        for n, batch in enumerate(batches):
            futures = ahead.pop()
            if n + 1 < len(batches):
                ahead.append([pool.submit(parse, p) for p in batches[n + 1]])
            yield list(zip(batch, (f.result() for f in futures), strict=True))


def _ingest_batch(
    retriever: Retriever,
    batch: list[tuple[Path, ParsedDocument]],
    owner: str,
    collection: str,
) -> list[tuple[Path, IngestResult | IngestError]]:
    """Ingest a batch at once; if one document fails, each alone, so the others go in."""
    docs: list[tuple[ParsedDocument, str | None]] = [(parsed, None) for _, parsed in batch]
    try:
        results = retriever.ingest_documents(docs, owner=owner, collection=collection)
        return list(zip([p for p, _ in batch], results, strict=True))
    except IngestError:
        out: list[tuple[Path, IngestResult | IngestError]] = []
        for path, parsed in batch:
            try:
                [result] = retriever.ingest_documents(
                    [(parsed, None)], owner=owner, collection=collection
                )
                out.append((path, result))
            except IngestError as exc:
                out.append((path, exc))
        return out


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
        with tqdm(total=len(files), desc="ingesting", unit="file") as bar:
            for batch in parsed_batches(files, settings.max_upload_bytes):
                done: list[tuple[Path, IngestResult | IngestError]] = [
                    (path, item) for path, item in batch if isinstance(item, IngestError)
                ]
                ready = [(p, item) for p, item in batch if isinstance(item, ParsedDocument)]
                done += _ingest_batch(retriever, ready, args.owner, args.collection)
                for path, outcome in done:
                    if isinstance(outcome, IngestError):
                        failed += 1
                        logger.error("skipped %s", outcome)
                    else:
                        logger.info(
                            "%s: %s (%d chunks, id %s)",
                            path,
                            outcome.status,
                            outcome.chunks,
                            outcome.document_id,
                        )
                bar.update(len(batch))
    finally:
        client.close()
    logger.info("%d of %d files ingested into %r", len(files) - failed, len(files), args.collection)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
