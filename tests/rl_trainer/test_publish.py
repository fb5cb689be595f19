import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from app.store import open_database
from app.store.adapters import active_adapter
from app.store.db import Database
from app.store.models import AdapterStatus, AdapterVersion
from backend.client import ModelClient
from rl_trainer import publish as pub
from tests.rl_trainer.store import count


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")


def versions(root: Path) -> list[str]:
    return (
        sorted(p.name for p in (root / "flywheel").iterdir())
        if (root / "flywheel").exists()
        else []
    )


def test_publish_writes_a_whole_version_with_its_manifest(
    db: Database, fresh_adapter: Path, tmp_path: Path
) -> None:
    root = tmp_path / "adapters"
    row = pub.publish(
        db, fresh_adapter, {"algo": "dpo"}, name="flywheel", adapters_root=root, base_model="m"
    )
    assert row.served_name == "flywheel-v1" and row.status == AdapterStatus.candidate
    files = {p.name for p in (root / "flywheel" / "v1").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "manifest.json"} <= files
    pub.update_manifest(db, row, gate={"passed": False})
    manifest = (root / "flywheel" / "v1" / "manifest.json").read_text()
    assert '"served_name": "flywheel-v1"' in manifest and '"passed": false' in manifest
    assert pub.get_version(db, "flywheel", "flywheel-v1").id == row.id
    assert pub.get_version(db, "flywheel", "v1").id == row.id
    with pytest.raises(pub.PublishError, match="no version flywheel-v9"):
        pub.get_version(db, "flywheel", 9)


def test_a_crash_while_writing_leaves_no_half_version_and_the_active_one_serving(
    db: Database, fresh_adapter: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "adapters"
    first = pub.publish(db, fresh_adapter, {}, name="flywheel", adapters_root=root, base_model="m")
    pub._flip(db, first, AdapterStatus.retired)  # v1 serves

    def crash(path: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(pub, "_fsync_tree", crash)
    with pytest.raises(OSError, match="disk full"):
        pub.publish(db, fresh_adapter, {}, name="flywheel", adapters_root=root, base_model="m")
    assert versions(root) == ["v1"]  # no v2, and no temporary left behind
    assert count(db, AdapterVersion) == 1
    active = active_adapter(db)
    assert active is not None and active.served_name == "flywheel-v1"


def test_leftovers_of_a_killed_publish_are_cleaned_and_numbers_never_reused(
    db: Database, fresh_adapter: Path, tmp_path: Path
) -> None:
    root = tmp_path / "adapters"
    # What a publish killed mid-copy leaves: a temporary directory, never a v<N>.
    stale = root / "flywheel" / ".tmp-v1-deadbeef"
    shutil.copytree(fresh_adapter, stale)
    old = time.time() - 2 * pub.STALE_TMP_S
    os.utime(stale, (old, old))
    # A version directory whose store row was lost (killed between rename and insert).
    shutil.copytree(fresh_adapter, root / "flywheel" / "v1")
    row = pub.publish(db, fresh_adapter, {}, name="flywheel", adapters_root=root, base_model="m")
    assert row.version == 2
    assert versions(root) == ["v1", "v2"]


@pytest.mark.slow
def test_a_version_the_server_cannot_load_is_not_promoted(
    db: Database, fresh_adapter: Path, model_server: Any
) -> None:
    root = model_server.adapters / "publish-test"
    with ModelClient(model_server.url, api_key=model_server.key) as client:
        row = pub.publish(db, fresh_adapter, {}, name="pubtest", adapters_root=root, base_model="x")
        # The adapter's config names the tiny model as its base: it loads and answers.
        pub.promote(db, client, row)
        assert active_adapter(db).served_name == "pubtest-v1"  # type: ignore[union-attr]
        broken = pub.publish(
            db, fresh_adapter, {}, name="pubtest", adapters_root=root, base_model="x"
        )
        (Path(broken.path) / "adapter_model.safetensors").unlink()
        with pytest.raises(pub.PublishError, match="could not load pubtest-v2"):
            pub.promote(db, client, broken)
        assert active_adapter(db).served_name == "pubtest-v1"  # type: ignore[union-attr]
        # Rollback from v1 goes to the base model; v1 is marked as rolled back.
        assert pub.rollback(db, client, "pubtest") is None
        assert active_adapter(db) is None
        client.unload_adapter("pubtest-v1")


@pytest.mark.slow
def test_a_version_the_gate_rejected_is_promoted_only_with_force(
    db: Database, fresh_adapter: Path, model_server: Any
) -> None:
    root = model_server.adapters / "force-test"
    with ModelClient(model_server.url, api_key=model_server.key) as client:
        row = pub.publish(db, fresh_adapter, {}, name="forced", adapters_root=root, base_model="x")
        pub.update_manifest(db, row, gate={"passed": False, "reasons": ["win rate 0.40 below"]})
        with pytest.raises(
            pub.PublishError, match=r"the gate rejected it: win rate 0\.40.*--force"
        ):
            pub.promote(db, client, row)
        assert active_adapter(db) is None
        assert "forced-v1" not in {m.id for m in client.list_models()}  # not even loaded

        pub.promote(db, client, row, force=True)
        active = active_adapter(db)
        assert active is not None and active.served_name == "forced-v1"
        assert active.manifest["forced_promotion"]["overrode"].startswith("the gate rejected")
        pub.rollback(db, client, "forced")
        client.unload_adapter("forced-v1")
