"""Parsing real files: a PDF with a table, Markdown, HTML; bad files are refused clearly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retriever.errors import FileTooLarge, IngestError, UnparseableFile, UnsupportedFileType
from retriever.parsing import parse_bytes, parse_file

BIG = 10 * 1024 * 1024


def make_pdf(path: Path, *, encrypt: bool = False) -> Path:
    """A two-page PDF: a heading, a paragraph and a ruled table, then a second page."""
    import pymupdf

    doc = pymupdf.open()
    page = doc.new_page()
    page.insert_text((72, 72), "Quarterly Report", fontsize=20)
    page.insert_text((72, 110), "The widget division grew strongly this year.", fontsize=11)
    rows = [["Region", "Revenue", "Growth"], ["North", "120", "5%"], ["South", "95", "12%"]]
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            rect = pymupdf.Rect(72 + c * 150, 150 + r * 20, 72 + (c + 1) * 150, 170 + r * 20)
            page.draw_rect(rect, color=(0, 0, 0), width=0.8)
            page.insert_text((rect.x0 + 4, rect.y1 - 6), cell, fontsize=10)
    second = doc.new_page()
    second.insert_text((72, 72), "Zebra migration crosses the Mara river each July.", fontsize=11)
    if encrypt:
        doc.save(
            path,
            encryption=pymupdf.PDF_ENCRYPT_AES_256,
            owner_pw="owner",
            user_pw="secret",
        )
    else:
        doc.save(path)
    return path


def test_pdf_table_becomes_markdown_and_pages_are_kept(tmp_path: Path) -> None:
    doc = parse_file(make_pdf(tmp_path / "report.pdf"), BIG)
    assert [s.page for s in doc.sections] == [1, 2]
    first = doc.sections[0].text
    assert "|Region|Revenue|Growth|" in first.replace(" ", "")
    assert "|South|95|12%|" in first.replace(" ", "")
    assert "Zebra migration" in doc.sections[1].text
    assert doc.title == "Quarterly Report"


def test_pdf_search_returns_page_and_table(tmp_path: Path, retriever: Any) -> None:
    result = retriever.ingest_file(make_pdf(tmp_path / "report.pdf"), owner="alice")
    assert result.status == "ingested" and result.chunks >= 2
    hit = retriever.search("zebra migration river", owner="alice", k=1)[0]
    assert hit.page == 2 and hit.document_id == result.document_id
    table = retriever.search("South region revenue growth", owner="alice", k=1)[0]
    assert table.page == 1 and "12%" in table.text


def test_markdown_keeps_heading_path(retriever: Any) -> None:
    text = (
        "# Handbook\n\nIntro text.\n\n## Travel\n\nBook trains early.\n\n"
        "### Expenses\n\nReceipts go to finance within 30 days.\n"
    )
    retriever.ingest_bytes(text.encode(), "handbook.md", owner="alice")
    hit = retriever.search("where do receipts go", owner="alice", k=1)[0]
    assert hit.heading == "Handbook > Travel > Expenses"
    assert hit.title == "Handbook"
    assert "finance" in hit.text


def test_html_drops_scripts_and_navigation() -> None:
    html = b"""<html><head><title>Guide</title><style>p{color:red}</style></head><body>
    <nav>Home | About | Login</nav><header>Site banner</header>
    <script>var tracking = "SECRET_TOKEN";</script>
    <main><h1>Install</h1><p>Run the installer.</p><h2>Linux</h2><p>Use apt.</p></main>
    <footer>Copyright footer</footer></body></html>"""
    doc = parse_bytes(html, "guide.html", BIG)
    text = doc.text
    assert doc.title == "Guide"
    assert "Run the installer." in text and "# Install" in text and "## Linux" in text
    for junk in ("SECRET_TOKEN", "Login", "Site banner", "Copyright footer", "color:red"):
        assert junk not in text


@pytest.mark.parametrize(
    ("name", "data", "error", "reason"),
    [
        (
            "broken.pdf",
            b"%PDF-1.7\n this is not really a pdf",
            UnparseableFile,
            "not a readable PDF",
        ),
        ("empty.md", b"   \n", UnparseableFile, "empty"),
        ("image.png", b"\x89PNG\r\n", UnsupportedFileType, "unsupported file type '.png'"),
        ("latin1.txt", "caf\xe9".encode("latin-1"), UnparseableFile, "not UTF-8"),
    ],
)
def test_bad_files_name_the_file_and_the_reason(
    name: str, data: bytes, error: type[IngestError], reason: str
) -> None:
    with pytest.raises(error) as caught:
        parse_bytes(data, name, BIG)
    assert caught.value.filename == name
    assert name in str(caught.value) and reason in str(caught.value)


def test_encrypted_pdf_is_refused(tmp_path: Path) -> None:
    path = make_pdf(tmp_path / "locked.pdf", encrypt=True)
    with pytest.raises(UnparseableFile, match=r"locked\.pdf: the PDF is encrypted"):
        parse_file(path, BIG)


def test_too_large_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("word " * 1000)
    with pytest.raises(FileTooLarge, match=r"big\.txt: .* over the 0\.0 MB limit"):
        parse_file(path, 1000)


def test_ingest_cli_goes_on_after_bad_files(
    tmp_path: Path,
    make_settings: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from retriever import cli, settings

    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Alpha\n\nAardvarks eat ants at night.\n")
    (folder / "b.txt").write_text("Beavers build dams on rivers.")
    (folder / "c.pdf").write_bytes(b"%PDF-1.4 corrupt")
    (folder / "d.md").write_text("")
    unknown = tmp_path / "e.docx"
    unknown.write_bytes(b"PK\x03\x04")
    configured = make_settings(MAX_UPLOAD_MB=1)
    monkeypatch.setattr(settings, "get_settings", lambda: configured)
    monkeypatch.setattr(cli, "get_settings", lambda: configured)
    with caplog.at_level(logging.INFO):
        code = cli.main([str(folder), str(unknown), "--collection", "zoo", "--owner", "u1"])
    assert code == 1
    log = caplog.text
    assert "c.pdf: not a readable PDF" in log
    assert "d.md: the file is empty" in log
    assert "e.docx: unsupported file type '.docx'" in log
    assert "2 of 5 files ingested into 'zoo'" in log

    from retriever.qdrant import open_client
    from retriever.service import Retriever

    client = open_client(configured)
    try:
        found = Retriever(client, configured)
        titles = sorted(d.title for d in found.list_documents("u1", "zoo"))
        assert titles == ["Alpha", "b"]
        assert found.search("beaver dams", owner="u1", collection="zoo", k=1)[0].title == "b"
    finally:
        client.close()
