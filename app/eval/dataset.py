"""Evaluation sets: the shared ClapNQ dev files as they are, or a simple JSONL of one's own.

**Own sets** (documented in the README): a folder with ``questions.jsonl`` and a
``documents/`` folder of files the API accepts. Each line of ``questions.jsonl``::

    {"id": "q1", "question": "...", "answers": ["reference answer", ...], "answerable": true}

``answers`` may be empty for an unanswerable question; ``answerable`` defaults to
whether ``answers`` is non-empty.

**ClapNQ** (KILT-ELI5 style ``*.jsonl`` with ``input``, ``passages`` and ``output``): the
documents are the questions' gold passages, deduplicated, one document each, and an item
is unanswerable when its reference answer is empty.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

QUESTIONS_FILE = "questions.jsonl"
DOCUMENTS_DIR = "documents"


Pool = Literal["all", "train", "eval"]
POOLS: tuple[Pool, ...] = ("all", "train", "eval")
EVAL_POOL_SHARE = 3  # one question in three goes to the evaluation pool


def pool_of(item_id: str) -> Pool:
    """``eval`` for about a third of question ids, ``train`` for the rest; fixed per id.

    The split is by a hash of the id alone, so a question never moves between pools when
    a set grows or is read in another order: the flywheel bench trains on the training
    pool and measures on the evaluation pool, which it never asks while training.
    """
    digest = hashlib.sha256(item_id.encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") % EVAL_POOL_SHARE == 0 else "train"


class DatasetError(ValueError):
    """The folder is not an evaluation set this module can read."""


@dataclass
class EvalDocument:
    """One document to ingest: raw text under a title, or a file."""

    document_id: str
    title: str
    text: str = ""
    path: Path | None = None


@dataclass
class EvalItem:
    """One question with its reference answers."""

    id: str
    question: str
    references: list[str] = field(default_factory=list)
    answerable: bool = True
    gold_documents: list[str] = field(default_factory=list)
    """Ids of the documents that hold the answer, when the set says so."""


@dataclass
class EvalSet:
    """A dataset's documents and questions."""

    name: str
    documents: list[EvalDocument]
    items: list[EvalItem]

    def pool(self, name: Pool) -> EvalSet:
        """The questions of one pool (documents unchanged): see :func:`pool_of`."""
        if name == "all":
            return self
        return EvalSet(self.name, self.documents, [i for i in self.items if pool_of(i.id) == name])

    def sample(self, limit: int | None) -> EvalSet:
        """At most ``limit`` answerable and ``limit`` unanswerable items, in file order."""
        if limit is None:
            return self
        answerable = [i for i in self.items if i.answerable][:limit]
        unanswerable = [i for i in self.items if not i.answerable][:limit]
        return EvalSet(self.name, self.documents, answerable + unanswerable)


def load_dataset(folder: Path) -> EvalSet:
    """The evaluation set in ``folder``; raises :class:`DatasetError` if it is neither format."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder} is not a folder")
    if (folder / QUESTIONS_FILE).is_file():
        return _load_own(folder)
    clapnq = sorted(p for p in folder.glob("*.jsonl") if _is_clapnq(p))
    if clapnq:
        return _load_clapnq(folder.name, clapnq)
    raise DatasetError(
        f"{folder} holds neither {QUESTIONS_FILE} (with a {DOCUMENTS_DIR}/ folder) nor "
        "ClapNQ-style *.jsonl files; see 'Evaluating answers' in the README"
    )


def _lines(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number} is not JSON: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise DatasetError(f"{path}:{number} is not a JSON object")
        rows.append(row)
    return rows


def _is_clapnq(path: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        first = handle.readline()
    try:
        row = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(row, dict) and {"input", "passages", "output"} <= row.keys()


def _passage_id(title: str, text: str) -> str:
    return hashlib.sha256(f"{title}\0{text}".encode()).hexdigest()[:32]


def _load_clapnq(name: str, paths: list[Path]) -> EvalSet:
    documents: dict[str, EvalDocument] = {}
    items: list[EvalItem] = []
    for path in paths:
        for row in _lines(path):
            gold = []
            for passage in row.get("passages") or []:
                title, text = str(passage.get("title", "")), str(passage.get("text", ""))
                doc_id = _passage_id(title, text)
                documents.setdefault(doc_id, EvalDocument(doc_id, title or doc_id, text))
                gold.append(doc_id)
            answers = [str(o.get("answer", "")) for o in row.get("output") or []]
            answers = [a for a in answers if a.strip()]
            items.append(EvalItem(str(row["id"]), str(row["input"]), answers, bool(answers), gold))
    return EvalSet(name, list(documents.values()), items)


def _load_own(folder: Path) -> EvalSet:
    docs_dir = folder / DOCUMENTS_DIR
    if not docs_dir.is_dir():
        raise DatasetError(f"{folder} has {QUESTIONS_FILE} but no {DOCUMENTS_DIR}/ folder")
    documents = [
        EvalDocument(_passage_id(p.name, ""), p.name, path=p)
        for p in sorted(docs_dir.iterdir())
        if p.is_file()
    ]
    items = []
    for number, row in enumerate(_lines(folder / QUESTIONS_FILE), start=1):
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise DatasetError(f"{QUESTIONS_FILE}:{number} has no 'question'")
        answers = [str(a) for a in row.get("answers") or [] if str(a).strip()]
        answerable = bool(row.get("answerable", bool(answers)))
        items.append(EvalItem(str(row.get("id", number)), question, answers, answerable))
    if not items:
        raise DatasetError(f"{folder / QUESTIONS_FILE} holds no questions")
    return EvalSet(folder.name, documents, items)
