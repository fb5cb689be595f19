"""Sections to chunks with llama-index's node parsers.

Markdown is first split at its headings (``MarkdownNodeParser``), so each chunk knows its
heading path; each piece is then cut by ``SentenceSplitter`` to at most ``chunk_size``
tokens with ``chunk_overlap`` tokens shared between neighbours. Tokens are counted with the
embedding model's own tokenizer (not tiktoken, which would download its tables), so a
chunk fits the encoder's window.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from retriever.parsing import ParsedDocument

HEADING_SEPARATOR = " > "


@dataclass(slots=True)
class Chunk:
    """A piece of a document as it is indexed."""

    text: str
    position: int
    page: int | None
    heading: str | None


class Chunker:
    """Cuts parsed documents into token-bounded chunks that keep page and heading."""

    def __init__(
        self, chunk_size: int, chunk_overlap: int, tokenizer: Callable[[str], list[int]]
    ) -> None:
        from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

        self._markdown = MarkdownNodeParser(header_path_separator="\x1f")
        self._splitter = SentenceSplitter(
            chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer
        )

    def _sections(self, text: str, markdown: bool) -> list[tuple[str, str | None]]:
        """(text, heading path) pieces of one section."""
        if not markdown:
            return [(text, None)]
        from llama_index.core import Document

        pieces = []
        for node in self._markdown.get_nodes_from_documents([Document(text=text)]):
            body = node.get_content()
            path = [p for p in str(node.metadata.get("header_path", "")).split("\x1f") if p]
            first = body.lstrip().split("\n", 1)[0]
            if first.startswith("#"):
                path.append(first.lstrip("#").strip())
            pieces.append((body, HEADING_SEPARATOR.join(path) or None))
        return pieces

    def chunk(self, doc: ParsedDocument) -> list[Chunk]:
        """All chunks of ``doc`` in reading order, numbered from 0."""
        chunks: list[Chunk] = []
        for section in doc.sections:
            for text, heading in self._sections(section.text, section.markdown):
                for piece in self._splitter.split_text(text):
                    if piece.strip():
                        chunks.append(Chunk(piece.strip(), len(chunks), section.page, heading))
        return chunks
