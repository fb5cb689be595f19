"""Publishing adapter versions and switching traffic: publish, promote, rollback.

The contracts of DESIGN.md: a version is ``<adapters_root>/<name>/v<N>/`` (peft files
plus ``manifest.json``), written into a temporary sibling and renamed into place, so a
crash never leaves half a version under a real name. It is served as ``<name>-v<N>``, a
name never reused, so no server cache can mix two versions. Promotion loads the version
into the model server, checks that it answers, and only then flips the active pointer in
the store, which the API reads for every new turn; requests already running finish on
the adapter they started with. The store's adapter table is the single source of truth.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.store import adapters as adapters_store
from app.store import loop as loop_store
from app.store.db import Database
from app.store.models import AdapterStatus, AdapterVersion
from backend.client import ModelClient
from backend.errors import ModelServerError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
TMP_PREFIX = ".tmp-"
STALE_TMP_S = 3600.0  # a temporary directory this old belongs to a crashed publish
_VERSION_DIR = re.compile(r"^v(\d+)$")


class PublishError(RuntimeError):
    """Publishing or switching adapters failed; the serving adapter is unchanged."""


def _fsync_tree(path: Path) -> None:
    for item in path.rglob("*"):
        if item.is_file():
            with item.open("rb") as handle:
                os.fsync(handle.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, never leaving a partial file."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex}")
    with tmp.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def next_version(db: Database, name: str, adapters_root: Path) -> int:
    """One past the highest version of ``name`` in the store *or* on disk (never reused)."""
    stored = adapters_store.highest_version(db, name)
    on_disk = [
        int(m.group(1))
        for p in (adapters_root / name).glob("v*")
        if (m := _VERSION_DIR.match(p.name)) is not None
    ]
    return max([stored, *on_disk]) + 1


def clean_stale(parent: Path) -> None:
    """Remove temporary directories left by publishes that crashed."""
    now = time.time()
    for tmp in parent.glob(f"{TMP_PREFIX}*"):
        if tmp.is_dir() and now - tmp.stat().st_mtime > STALE_TMP_S:
            logger.warning("removing %s left by a crashed publish", tmp)
            shutil.rmtree(tmp, ignore_errors=True)


def write_version(adapter_dir: Path, target: Path, manifest: dict[str, Any]) -> Path:
    """Copy the peft files of ``adapter_dir`` and ``manifest`` to ``target`` atomically."""
    if target.exists():
        raise PublishError(f"{target} already exists; versions are never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent)
    tmp = target.parent / f"{TMP_PREFIX}{target.name}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(adapter_dir, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        _fsync_tree(tmp)
        os.rename(tmp, target)  # atomic on one filesystem: the version appears whole or not
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def publish(
    db: Database,
    adapter_dir: Path,
    manifest: dict[str, Any],
    *,
    name: str,
    adapters_root: Path,
    base_model: str,
) -> AdapterVersion:
    """Write a new version of ``name`` from ``adapter_dir`` and record it as a candidate."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise PublishError(f"{adapter_dir} holds no peft adapter (adapter_config.json missing)")
    version = next_version(db, name, adapters_root)
    target = adapters_root / name / f"v{version}"
    full = {
        **manifest,
        "name": name,
        "version": version,
        "served_name": f"{name}-v{version}",
        "base_model": base_model,
        "published_at": datetime.now(UTC).isoformat(),
    }
    write_version(adapter_dir, target, full)
    row = adapters_store.add_version(
        db,
        name=name,
        version=version,
        path=str(target.resolve()),
        base_model=base_model,
        manifest=full,
    )
    logger.info("published %s at %s (candidate)", row.served_name, target)
    return row


def get_version(db: Database, name: str, version: int | str) -> AdapterVersion:
    """A version by number (``3``, ``v3``) or served name (``flywheel-v3``)."""
    text = str(version)
    match = re.fullmatch(rf"(?:{re.escape(name)}-)?v?(\d+)", text)
    if match is None:
        raise PublishError(f"{text!r} is not a version of {name!r} (give 3, v3 or {name}-v3)")
    number = int(match.group(1))
    row = adapters_store.find_version(db, name, number)
    if row is None:
        raise PublishError(f"no version {name}-v{number} in the store; see rl-trainer status")
    return row


def update_manifest(db: Database, row: AdapterVersion, **fields: Any) -> AdapterVersion:
    """Merge ``fields`` into the version's manifest, in the store and on disk."""
    manifest = adapters_store.merge_manifest(db, row.id, fields)
    if manifest is None:
        raise PublishError(f"version {row.served_name} vanished from the store")
    path = Path(row.path) / MANIFEST
    if path.parent.is_dir():
        write_json_atomic(path, manifest)
    row.manifest = manifest
    return row


def set_status(db: Database, row: AdapterVersion, status: AdapterStatus) -> None:
    """Set one version's status (not ``active``: use :func:`promote`)."""
    adapters_store.set_status(db, row.id, status)
    row.status = status


def ensure_loaded(client: ModelClient, row: AdapterVersion) -> bool:
    """Load the version into the server unless it is already there; True if it loaded it."""
    served = {m.id for m in client.list_models()}
    if row.served_name in served:
        return False
    client.load_adapter(row.served_name, row.path)
    logger.info("loaded %s into the model server", row.served_name)
    return True


def check_answers(client: ModelClient, model: str) -> None:
    """Ask ``model`` one short question; raise PublishError unless it answers."""
    try:
        result = client.chat(
            [{"role": "user", "content": "Hello"}], model=model, max_tokens=4, temperature=0.0
        )
    except ModelServerError as exc:
        raise PublishError(f"{model} does not answer: {exc}") from exc
    if result.usage is not None and result.usage.completion_tokens == 0 and not result.text:
        raise PublishError(f"{model} answered with nothing")


def _flip(db: Database, target: AdapterVersion | None, previous_status: AdapterStatus) -> None:
    """Make ``target`` the only active version (None: the base model), in one transaction."""
    if not adapters_store.flip_active(db, target.id if target else None, previous_status):
        assert target is not None
        raise PublishError(f"version {target.served_name} vanished from the store")


def rejection(row: AdapterVersion) -> str | None:
    """Why the gate (or the run) rejected ``row``; None when nothing did.

    A version rolled back after passing the gate is not "rejected" here: it may serve again.
    """
    gate = row.manifest.get("gate") or {}
    if gate and not gate.get("passed"):
        reasons = "; ".join(gate.get("reasons") or []) or "no reason recorded"
        return f"the gate rejected it: {reasons}"
    reason = row.manifest.get("rejected_because")
    return f"rejected: {reason}" if reason else None


def promote(
    db: Database, client: ModelClient, row: AdapterVersion, *, force: bool = False
) -> AdapterVersion:
    """Load ``row`` into the server, check it answers, then make it the active adapter.

    A version the gate rejected is refused unless ``force``; a forced promotion is
    recorded in the manifest (``forced_promotion``).
    """
    refused = rejection(row)
    if refused is not None and not force:
        raise PublishError(
            f"{row.served_name} was not promoted: {refused}. Promote it anyway with --force "
            "(rl-trainer promote --force), or train a better candidate"
        )
    try:
        loaded = ensure_loaded(client, row)
    except ModelServerError as exc:
        raise PublishError(f"could not load {row.served_name} from {row.path}: {exc}") from exc
    if row.status == AdapterStatus.active:
        # Already active in the store; after a model-server restart it was loaded again.
        logger.info("%s is already active%s", row.served_name, " (reloaded)" if loaded else "")
        return row
    check_answers(client, row.served_name)
    _flip(db, row, AdapterStatus.retired)
    row.status = AdapterStatus.active
    if refused is not None:
        forced = {"at": datetime.now(UTC).isoformat(), "overrode": refused}
        update_manifest(db, row, forced_promotion=forced)
        logger.warning("promoted %s although %s (--force)", row.served_name, refused)
    logger.info("promoted %s: new turns use it", row.served_name)
    return row


def start_canary(
    db: Database, client: ModelClient, row: AdapterVersion, share: float
) -> AdapterVersion:
    """Load a gated candidate, check it answers, then let it serve ``share`` of users on trial.

    The active version keeps serving everyone else; :func:`promote` or :func:`stop_canary`
    ends the trial.
    """
    refused = rejection(row)
    if refused is not None:
        raise PublishError(f"{row.served_name} cannot go on canary trial: {refused}")
    _, running = loop_store.serving_versions(db)
    if running is not None and running.id != row.id:
        raise PublishError(
            f"{running.served_name} is on canary trial already: promote or roll it back first"
        )
    try:
        ensure_loaded(client, row)
    except ModelServerError as exc:
        raise PublishError(f"could not load {row.served_name} from {row.path}: {exc}") from exc
    check_answers(client, row.served_name)
    loop_store.start_canary(db, row.id, share)
    row.status = AdapterStatus.canary
    logger.info("%s serves %.0f%% of users on canary trial", row.served_name, share * 100)
    return row


def stop_canary(db: Database, client: ModelClient, row: AdapterVersion) -> None:
    """End a canary trial by rejecting the version; everyone gets the active one again."""
    adapters_store.set_status(db, row.id, AdapterStatus.rejected)
    row.status = AdapterStatus.rejected
    try:  # frees the server's memory; nothing routes to it any more
        client.unload_adapter(row.served_name)
    except ModelServerError as exc:
        logger.warning("could not unload %s: %s", row.served_name, exc)


def rollback(db: Database, client: ModelClient, name: str) -> AdapterVersion | None:
    """Switch back to the version active before the current one (None: the base model).

    The rolled-back version is marked rejected so a second rollback goes further back.
    The previous version is loaded again first if the server no longer has it.
    """
    current, previous = adapters_store.rollback_pair(db, name)
    if current is None:
        raise PublishError(f"no active version of {name!r} to roll back from")
    if previous is not None:
        try:
            ensure_loaded(client, previous)
        except ModelServerError as exc:
            raise PublishError(
                f"could not reload {previous.served_name} from {previous.path}: {exc}"
            ) from exc
        check_answers(client, previous.served_name)
    adapters_store.roll_back(db, current.id, previous.id if previous else None)
    logger.info(
        "rolled back %s; now serving %s",
        current.served_name,
        previous.served_name if previous is not None else "the base model",
    )
    return previous
