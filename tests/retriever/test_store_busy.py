"""A second process on the local Qdrant store (the CLI while the API runs) gets a clear
message, not a stack trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from retriever.qdrant import QdrantBusy, open_client
from retriever.settings import RetrieverSettings


def test_busy_local_store_is_reported_with_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = RetrieverSettings(DATA_DIR=tmp_path)
    held = open_client(settings)
    try:
        with pytest.raises(QdrantBusy, match=r"in use by another process.*QDRANT_URL"):
            open_client(settings)
        from retriever import cli

        monkeypatch.setattr(cli, "get_settings", lambda: settings)
        doc = tmp_path / "a.txt"
        doc.write_text("hello")
        with pytest.raises(SystemExit) as exit_info:
            cli.main([str(doc)])
        assert exit_info.value.code == 2
        assert "Upload through the API or the UI" in capsys.readouterr().err
    finally:
        held.close()
