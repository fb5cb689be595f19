"""Files to text sections: PDF, Markdown, HTML and plain text.

PDFs go through pymupdf4llm, which writes each page as Markdown (tables as Markdown
tables) and keeps its page number; HTML keeps its main text with headings turned into
Markdown headings, so the chunker sees one format. Anything that cannot be read raises a
subclass of :class:`~retriever.errors.IngestError` that names the file and the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from retriever.errors import FileTooLarge, UnparseableFile, UnsupportedFileType

logger = logging.getLogger(__name__)

SUFFIXES = {
    ".pdf": "pdf",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".txt": "text",
    ".text": "text",
}
# Page furniture and code that is not the document's text.
_HTML_DROP = ("script", "style", "noscript", "nav", "header", "footer", "aside", "form", "svg")


@dataclass(slots=True)
class Section:
    """A stretch of a document's text: one PDF page, or a whole Markdown/HTML/text file."""

    text: str
    page: int | None = None
    markdown: bool = True


@dataclass(slots=True)
class ParsedDocument:
    """A parsed document: its title, where it came from, and its text sections."""

    title: str
    source: str
    sections: list[Section] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All the text, sections separated by blank lines."""
        return "\n\n".join(s.text for s in self.sections)


def parse_file(path: Path, max_bytes: int) -> ParsedDocument:
    """Parse the file at ``path``; its size is checked before it is read."""
    name = path.name
    if not path.is_file():
        raise UnparseableFile(name, f"no such file: {path}")
    size = path.stat().st_size
    if size > max_bytes:
        raise _too_large(name, size, max_bytes)
    return parse_bytes(path.read_bytes(), name, max_bytes)


def _too_large(name: str, size: int, max_bytes: int) -> FileTooLarge:
    mb = 1024 * 1024
    return FileTooLarge(
        name, f"{size / mb:.1f} MB is over the {max_bytes / mb:.1f} MB limit (MAX_UPLOAD_MB)"
    )


def parse_bytes(data: bytes, filename: str, max_bytes: int) -> ParsedDocument:
    """Parse an uploaded file's bytes; the type comes from the file name's suffix."""
    kind = SUFFIXES.get(Path(filename).suffix.lower())
    if kind is None:
        supported = ", ".join(sorted(SUFFIXES))
        raise UnsupportedFileType(
            filename,
            f"unsupported file type {Path(filename).suffix or '(none)'!r}; supported: {supported}",
        )
    if len(data) > max_bytes:
        raise _too_large(filename, len(data), max_bytes)
    if not data.strip():
        raise UnparseableFile(filename, "the file is empty")
    stem = Path(filename).stem
    if kind == "pdf":
        doc = _parse_pdf(data, filename)
    elif kind == "html":
        doc = _parse_html(_decode(data, filename), filename)
    else:
        text = _decode(data, filename)
        markdown = kind == "markdown"
        doc = ParsedDocument(_markdown_title(text) if markdown else stem, filename)
        doc.sections.append(Section(text, None, markdown))
    doc.sections = [s for s in doc.sections if s.text.strip()]
    if not doc.sections:
        raise UnparseableFile(filename, "no text could be extracted (scanned images only?)")
    doc.title = doc.title.strip() or stem
    return doc


def _decode(data: bytes, filename: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnparseableFile(filename, f"not UTF-8 text (byte {exc.start} is invalid)") from exc


def _markdown_title(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return ""


def _parse_pdf(data: bytes, filename: str) -> ParsedDocument:
    import pymupdf
    import pymupdf4llm

    try:
        pdf = pymupdf.open(stream=data, filetype="pdf")
    except (pymupdf.FileDataError, RuntimeError, ValueError) as exc:
        raise UnparseableFile(filename, f"not a readable PDF ({exc})") from exc
    with pdf:
        if pdf.needs_pass or pdf.is_encrypted:
            raise UnparseableFile(filename, "the PDF is encrypted; remove its password first")
        if pdf.page_count == 0:
            raise UnparseableFile(filename, "the PDF has no pages")
        title = str((pdf.metadata or {}).get("title") or "")
        try:
            pages = pymupdf4llm.to_markdown(
                pdf, page_chunks=True, use_ocr=False, show_progress=False
            )
        except (RuntimeError, ValueError) as exc:
            raise UnparseableFile(filename, f"the PDF could not be converted ({exc})") from exc
    doc = ParsedDocument(title, filename)
    for number, page in enumerate(pages, start=1):
        meta = page.get("metadata", {})
        doc.sections.append(
            Section(str(page.get("text", "")), int(meta.get("page_number", number)))
        )
    if not title:
        doc.title = next(
            (t for s in doc.sections if (t := _markdown_title(s.text))), Path(filename).stem
        )
    return doc


def _parse_html(html: str, filename: str) -> ParsedDocument:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for tag in soup(_HTML_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    for level in range(1, 7):
        for heading in root.find_all(f"h{level}"):
            text = heading.get_text(" ", strip=True)
            heading.replace_with(f"\n\n{'#' * level} {text}\n\n")
    for block in root.find_all(["p", "li", "tr", "pre", "blockquote", "div", "br"]):
        block.insert_after("\n")
    lines = [" ".join(line.split()) for line in root.get_text("").splitlines()]
    text = "\n".join(lines)
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    doc = ParsedDocument(title or _markdown_title(text), filename)
    doc.sections.append(Section(text.strip(), None, True))
    return doc
