"""Documents: upload (ingested in the background), list with status, delete.

Size and type are checked before anything is stored, so a bad file costs nothing; a
file that fails to parse is marked failed with the reason while the rest of the batch is
ingested. The document id is derived from owner, collection and file name, so uploading a
changed file again replaces its chunks and an unchanged one is a no-op.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Response, UploadFile, status

from app.api.deps import CurrentUser, ServicesDep
from app.api.schemas import (
    MAX_COLLECTION_CHARS,
    MAX_FILENAME_CHARS,
    DocumentOut,
    UploadResult,
    error_responses,
)
from app.services import Services
from app.store import documents as store
from retriever.parsing import SUFFIXES

logger = logging.getLogger(__name__)
router = APIRouter(tags=["documents"], responses=error_responses(401, 404, 413, 415, 422, 429, 503))


def document_id(user_id: str, collection: str, filename: str) -> str:
    """A stable id for the user's file in a collection."""
    return hashlib.sha256(f"{user_id}\0{collection}\0{filename}".encode()).hexdigest()[:32]


async def _ingest(
    services: Services, doc_id: str, data: bytes, filename: str, user_id: str, collection: str
) -> None:
    if services.retriever is None:  # checked before scheduling; kept for the type checker
        return
    try:
        result = await asyncio.to_thread(
            services.retriever.ingest_bytes,
            data,
            filename,
            owner=user_id,
            collection=collection,
            document_id=doc_id,
        )
    except Exception as exc:  # any parse/index failure is shown on the document, not raised
        logger.warning("ingesting %s failed: %s", filename, exc)
        await asyncio.to_thread(store.finish_document, services.db, doc_id, error=str(exc))
        return
    await asyncio.to_thread(
        store.finish_document,
        services.db,
        doc_id,
        title=result.title,
        chunks=result.chunks,
        content_hash=result.content_hash,
    )


async def _read_capped(upload: UploadFile, limit: int) -> bytes | None:
    """The file's bytes, or None as soon as it is over ``limit``."""
    data = await upload.read(limit + 1)
    return None if len(data) > limit else data


@router.post("/documents", response_model=UploadResult, status_code=status.HTTP_202_ACCEPTED)
async def upload(
    user: CurrentUser,
    services: ServicesDep,
    files: Annotated[list[UploadFile], File(description="PDF, Markdown, HTML or text files.")],
    collection: Annotated[str | None, Form(min_length=1, max_length=MAX_COLLECTION_CHARS)] = None,
) -> UploadResult:
    """Upload files; each is ingested in the background (poll ``GET /documents``)."""
    if services.retriever is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "document search is not running")
    collection = collection or services.settings.default_collection
    limit = services.settings.max_upload_bytes
    accepted: list[DocumentOut] = []
    rejected: list[dict[str, Any]] = []
    for upload_file in files:
        name = PurePath(upload_file.filename or "upload").name
        suffix = PurePath(name).suffix.lower()
        if len(name) > MAX_FILENAME_CHARS:
            rejected.append(
                {
                    "filename": name[:64] + "…",
                    "status": 422,
                    "reason": f"a file name is {len(name)} characters long; the limit is "
                    f"{MAX_FILENAME_CHARS}: rename the file",
                }
            )
            continue
        if suffix not in SUFFIXES:
            rejected.append(
                {
                    "filename": name,
                    "status": 415,
                    "reason": f"{name}: unsupported type {suffix or '(none)'}; "
                    f"upload one of {', '.join(sorted(SUFFIXES))}",
                }
            )
            continue
        data = await _read_capped(upload_file, limit)
        if data is None:
            rejected.append(
                {
                    "filename": name,
                    "status": 413,
                    "reason": f"{name} is over the {services.settings.max_upload_mb:g} MB limit "
                    "(MAX_UPLOAD_MB)",
                }
            )
            continue
        doc_id = document_id(user.id, collection, name)
        doc = await asyncio.to_thread(
            store.add_document,
            services.db,
            document_id=doc_id,
            user_id=user.id,
            collection=collection,
            filename=name,
        )
        services.spawn(_ingest(services, doc_id, data, name, user.id, collection))
        accepted.append(DocumentOut.model_validate(doc, from_attributes=True))
    if not accepted and rejected:
        first = rejected[0]
        raise HTTPException(first["status"], "; ".join(r["reason"] for r in rejected))
    return UploadResult(documents=accepted, rejected=rejected)


@router.get("/documents", response_model=list[DocumentOut])
async def list_documents(
    user: CurrentUser,
    services: ServicesDep,
    collection: Annotated[str | None, Query(max_length=MAX_COLLECTION_CHARS)] = None,
) -> list[DocumentOut]:
    """The caller's documents with their ingestion status."""
    rows = await asyncio.to_thread(store.list_documents, services.db, user.id, collection)
    return [DocumentOut.model_validate(d, from_attributes=True) for d in rows]


@router.get("/documents/{doc_id}", response_model=DocumentOut)
async def get_document(doc_id: str, user: CurrentUser, services: ServicesDep) -> DocumentOut:
    """One of the caller's documents."""
    doc = await asyncio.to_thread(store.get_document, services.db, user.id, doc_id)
    if doc is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id!r}")
    return DocumentOut.model_validate(doc, from_attributes=True)


@router.delete("/documents/{doc_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_document(doc_id: str, user: CurrentUser, services: ServicesDep) -> Response:
    """Delete a document and all its chunks."""
    if await asyncio.to_thread(store.get_document, services.db, user.id, doc_id) is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no document {doc_id!r}")
    if services.retriever is not None:
        await asyncio.to_thread(services.retriever.delete_document, doc_id, owner=user.id)
    await asyncio.to_thread(store.delete_document, services.db, user.id, doc_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
