"""Documents: upload several files at once, watch each one get ingested, list, delete.

Files go up one request each so the progress bar moves and a file the API refuses (too
large, wrong type) is reported by name while the others go through. Ingestion runs in
the API's background; this page polls ``GET /documents`` until the new files are
ready or failed, then shows the list.
"""

from __future__ import annotations

import math
import time
from typing import Any

import streamlit as st

from ui.api_client import ApiClient, ApiError
from ui.common import client, flash, show_flash
from ui.settings import get_settings

# The API's accepted types (app/api/documents.py SUPPORTED); the browser filters on them.
FILE_TYPES = ["pdf", "md", "markdown", "html", "htm", "txt", "text"]
ALL = "All collections"
STATUS_ICONS = {"ready": ":material/check_circle:", "ingesting": ":material/hourglass_top:"}


def delete_document(api: ApiClient, doc: dict[str, Any]) -> None:
    """Delete a document and its chunks."""
    try:
        api.delete_document(doc["id"])
    except ApiError as exc:
        flash(exc.message, "error")
    else:
        flash(f"Deleted {doc['title'] or doc['filename']}.")


def status_line(doc: dict[str, Any]) -> str:
    """A document's ingestion status in words."""
    status = doc["status"]
    if status == "ready":
        chunks = doc["chunks"]
        return f"ready · {chunks} {'chunk' if chunks == 1 else 'chunks'}"
    if status == "failed":
        return f"failed: {doc.get('error') or 'unknown reason'}"
    return status


def upload(api: ApiClient, files: list[Any], collection: str) -> None:
    """Send each file, then wait for those accepted to be ingested."""
    progress = st.progress(0.0, text="Uploading…")
    accepted: dict[str, str] = {}
    refused: list[str] = []
    for done, file in enumerate(files, start=1):
        progress.progress((done - 1) / len(files), text=f"Uploading {file.name}…")
        try:
            result = api.upload([(file.name, file.getvalue())], collection or None)
        except ApiError as exc:
            refused.append(f"{file.name}: {exc.message}")
            continue
        accepted |= {d["id"]: d["filename"] for d in result["documents"]}
        refused += [f"{r['filename']}: {r['reason']}" for r in result.get("rejected", [])]
    progress.progress(1.0, text=f"Uploaded {len(accepted)} of {len(files)} file(s).")
    for reason in refused:
        st.error(reason)
    if accepted:
        wait_for_ingestion(api, accepted)


def wait_for_ingestion(api: ApiClient, ids: dict[str, str]) -> None:
    """Poll until every document in ``ids`` is ready or failed (or the wait runs out)."""
    deadline = time.monotonic() + get_settings().ingest_wait_s
    pending = set(ids)
    with st.spinner(f"Ingesting {len(ids)} file(s): parsing, chunking, embedding…"):
        while pending and time.monotonic() < deadline:
            try:
                current = {d["id"]: d for d in api.documents()}
            except ApiError as exc:
                st.error(exc.message)
                return
            pending = {i for i in pending if current.get(i, {}).get("status") == "ingesting"}
            if pending:
                time.sleep(1.0)
    if pending:
        st.info(f"{len(pending)} file(s) are still being ingested; refresh the list in a while.")


def document_row(api: ApiClient, doc: dict[str, Any]) -> None:
    """One document: name, collection, status, delete."""
    name, collection, status, delete = st.columns([4, 2, 4, 1], vertical_alignment="center")
    title = doc["title"] or doc["filename"]
    name.markdown(f"**{title}**" + (f"  \n{doc['filename']}" if title != doc["filename"] else ""))
    collection.write(doc["collection"])
    if doc["status"] == "failed":
        status.error(status_line(doc), icon=":material/error:")
    else:
        status.markdown(f"{STATUS_ICONS.get(doc['status'], '')} {status_line(doc)}")
    delete.button(
        "",
        icon=":material/delete:",
        key=f"delete-{doc['id']}",
        help=f"Delete {title} and its passages",
        on_click=delete_document,
        args=(api, doc),
    )


api = client()
st.title("Documents")
show_flash()
st.caption("The assistant answers from these. PDF, Markdown, HTML and text files.")

with st.form("upload", clear_on_submit=True):
    files = st.file_uploader(
        "Files",
        type=FILE_TYPES,
        accept_multiple_files=True,
        max_upload_size=max(1, math.ceil(get_settings().max_upload_mb)),
    )
    collection = st.text_input(
        "Collection", placeholder="default", help="Group documents to search them separately."
    )
    submitted = st.form_submit_button("Upload", type="primary", icon=":material/upload:")
if submitted:
    if files:
        upload(api, list(files), collection.strip())
    else:
        st.warning("Choose at least one file to upload.")

try:
    documents = api.documents()
except ApiError as exc:
    st.error(exc.message)
    st.stop()

header, refresh = st.columns([5, 1], vertical_alignment="bottom")
header.subheader(f"Your documents ({len(documents)})")
refresh.button("Refresh", icon=":material/refresh:")
if not documents:
    st.info("No documents yet: upload some above.")
else:
    collections = sorted({d["collection"] for d in documents})
    shown = st.selectbox("Collection", [ALL, *collections], key="show-collection")
    if any(d["status"] == "ingesting" for d in documents):
        st.caption("Some files are still being ingested: press Refresh to update.")
    for doc in documents:
        if shown in (ALL, doc["collection"]):
            document_row(api, doc)
