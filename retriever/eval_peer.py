"""The plain peer the retriever is measured against: ``bm25s`` over character n-grams.

About 25 lines of code anyone would write first for Chinese retrieval: lower-case the
text, cut every run of CJK characters into character unigrams and bigrams, keep other
words whole (English stop words dropped), and index whole documents with ``bm25s``
(Lucene's BM25 variant). It runs on the same corpus and queries in the same process, so
its scores and latency sit beside Flywheel's in ``retriever.eval`` and the benchmark.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from retriever.keyword import CJK_CHARS

_TOKEN = re.compile(rf"([{CJK_CHARS}]+)|([^\W_{CJK_CHARS}]+)", re.UNICODE)


def char_ngrams(text: str) -> list[str]:
    """Character unigrams and bigrams of CJK runs, whole lower-cased words elsewhere."""
    from bm25s.stopwords import STOPWORDS_EN

    out: list[str] = []
    for cjk, word in _TOKEN.findall(text.lower()):
        if cjk:
            out.extend(cjk)
            out.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
        elif word not in STOPWORDS_EN:
            out.append(word)
    return out


class BigramBM25:
    """bm25s over :func:`char_ngrams` of whole documents."""

    def __init__(self, doc_ids: Sequence[str], texts: Sequence[str]) -> None:
        import bm25s

        self._ids = list(doc_ids)
        self._vocab: dict[str, int] = {}
        corpus = [self._ids_of(char_ngrams(t), grow=True) for t in texts]
        self._index = bm25s.BM25()
        self._index.index(bm25s.tokenization.Tokenized(ids=corpus, vocab=self._vocab))

    def _ids_of(self, tokens: list[str], grow: bool) -> list[int]:
        if grow:
            return [self._vocab.setdefault(t, len(self._vocab)) for t in tokens]
        return [self._vocab[t] for t in tokens if t in self._vocab]

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The ``k`` best ``(document id, score)`` pairs for ``query``."""
        ids = self._ids_of(char_ngrams(query), grow=False)
        if not ids:
            return []
        docs: Any
        docs, scores = self._index.retrieve(
            [ids], k=min(k, len(self._ids)), show_progress=False, n_threads=1
        )
        return [(self._ids[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True)]
