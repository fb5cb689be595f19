"""Document records: the status of each upload, mirrored from the retriever's index."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from app.store.db import Database
from app.store.models import Document, DocumentStatus


def add_document(
    db: Database, *, document_id: str, user_id: str, collection: str, filename: str
) -> Document:
    """Record an upload as ingesting (replacing the user's earlier record of the same id)."""
    with db.session() as session:
        doc = session.get(Document, document_id)
        if doc is None:
            doc = Document(id=document_id, user_id=user_id)
            session.add(doc)
        doc.collection, doc.filename, doc.title = collection, filename, filename
        doc.status, doc.error, doc.updated_at = DocumentStatus.ingesting, None, datetime.now(UTC)
    return doc


def finish_document(
    db: Database,
    document_id: str,
    *,
    error: str | None = None,
    title: str | None = None,
    chunks: int = 0,
    content_hash: str | None = None,
) -> None:
    """Mark a document ready (or failed, with the reason)."""
    with db.session() as session:
        doc = session.get(Document, document_id)
        if doc is None:  # deleted while it was ingesting
            return
        doc.status = DocumentStatus.failed if error else DocumentStatus.ready
        doc.error = error
        doc.chunks = chunks
        doc.title = title or doc.title
        doc.content_hash = content_hash
        doc.updated_at = datetime.now(UTC)


def list_documents(db: Database, user_id: str, collection: str | None = None) -> list[Document]:
    """The user's documents, newest first."""
    query = select(Document).where(Document.user_id == user_id)
    if collection:
        query = query.where(Document.collection == collection)
    with db.session() as session:
        return list(session.scalars(query.order_by(Document.created_at.desc())))


def get_document(db: Database, user_id: str, document_id: str) -> Document | None:
    """The user's document, or None."""
    with db.session() as session:
        doc = session.get(Document, document_id)
        return doc if doc is not None and doc.user_id == user_id else None


def delete_document(db: Database, user_id: str, document_id: str) -> bool:
    """Forget the user's document record; False when it is not theirs."""
    with db.session() as session:
        doc = session.get(Document, document_id)
        if doc is None or doc.user_id != user_id:
            return False
        session.delete(doc)
    return True


INTERRUPTED = (
    "ingestion was interrupted (the API stopped before it finished); upload the file again"
)


def fail_interrupted(db: Database) -> int:
    """Mark every document still ``ingesting`` as failed; how many there were.

    Called when the API starts: its bytes were only in the stopped process's memory, so
    nothing can resume it, and leaving it ``ingesting`` would make a client wait forever.
    (One API process per store: a second one starting would fail the first one's work.)
    """
    with db.session() as session:
        stuck = list(
            session.scalars(select(Document).where(Document.status == DocumentStatus.ingesting))
        )
        for doc in stuck:
            doc.status, doc.error, doc.updated_at = (
                DocumentStatus.failed,
                INTERRUPTED,
                datetime.now(UTC),
            )
        return len(stuck)
