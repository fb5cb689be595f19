"""Errors raised while ingesting a file; each names the file and says why it was refused.

The API maps the subclasses to HTTP statuses (415, 413, 422); the ingest CLI reports them
and goes on with the rest of the batch.
"""

from __future__ import annotations


class IngestError(Exception):
    """A file could not be ingested."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


class UnsupportedFileType(IngestError):
    """The file's type is not one the retriever parses."""


class FileTooLarge(IngestError):
    """The file is over MAX_UPLOAD_MB."""


class UnparseableFile(IngestError):
    """The file is corrupt, encrypted, empty or holds no text."""
