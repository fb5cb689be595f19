"""Running an evaluation set through the agent the API uses.

The documents go into the retriever as an upload would put them (one batch, one owner);
each question is a new thread of one eval user, run by :func:`app.turns.start_turn`
exactly as ``POST /chat`` runs it, and the stored turn is read back for its token counts
and citations.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from app.eval.dataset import EvalItem, EvalSet
from app.eval.scoring import Outcome
from app.services import Services
from app.store.answer_checks import citations_valid, ends_in_repetition, recall_f1
from app.store.records import says_not_in_documents
from app.store.threads import get_turn
from app.turns import TurnFailed, collect, start_turn
from app.users import create_user, user_by_name
from retriever.parsing import ParsedDocument, Section, parse_file

logger = logging.getLogger(__name__)

EVAL_USER = "eval"
COLLECTION = "eval"


def ingest(services: Services, dataset: EvalSet, owner: str, progress: bool = True) -> int:
    """Index the set's documents for ``owner``; returns how many chunks they made."""
    if services.retriever is None:
        raise RuntimeError("the retriever is off: nothing to evaluate answers against")
    batch = []
    for doc in dataset.documents:
        if doc.path is not None:
            parsed = parse_file(doc.path, services.retriever.settings.max_upload_bytes)
        else:
            parsed = ParsedDocument(doc.title, doc.title, [Section(doc.text, None, True)])
        batch.append((parsed, doc.document_id))
    results = services.retriever.ingest_documents(
        batch, owner=owner, collection=COLLECTION, progress=progress
    )
    return sum(r.chunks for r in results)


def eval_user(services: Services) -> str:
    """The id of the user the questions are asked as (created on first use)."""
    found = user_by_name(services.db, EVAL_USER)
    if found is not None:
        return found.id
    user, _ = create_user(services.db, EVAL_USER)
    return user.id


def _at_cap(turn: Any) -> bool:
    """Whether the answer stopped at its token cap (it was cut off, not finished)."""
    if turn is None:
        return False
    cap = int((turn.sampling or {}).get("max_tokens") or 0)
    return bool(cap and turn.completion_tokens == cap)


def score(
    item: EvalItem,
    *,
    answer: str,
    retrieved: list[Any],
    sources: list[Any],
    at_cap: bool,
    latency_s: float,
    error: str | None,
) -> Outcome:
    """One question's outcome from what the system answered and what it was given."""
    recall, f1 = recall_f1(answer, item.references)
    gold = set(item.gold_documents)
    return Outcome(
        id=item.id,
        question=item.question,
        answerable=item.answerable,
        answer=answer,
        declined=says_not_in_documents(answer),
        recall=recall,
        f1=f1,
        cited_valid=citations_valid(answer, len(retrieved)),
        cited_gold=any(s.get("document_id") in gold for s in sources),
        attached_citations=any(s.get("origin") == "attached" for s in sources),
        repetition=ends_in_repetition(answer),
        at_token_cap=at_cap,
        gold_retrieved=any(c.get("document_id") in gold for c in retrieved),
        latency_s=round(latency_s, 3),
        error=error,
    )


async def ask_all(
    services: Services,
    dataset: EvalSet,
    user_id: str,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Ask every question, one at a time (as one user would), and score the answers."""
    outcomes = []
    for item in dataset.items:
        start = time.perf_counter()
        error = None
        try:
            outcome = await collect(
                start_turn(
                    services,
                    user_id=user_id,
                    question=item.question,
                    thread_id=None,
                    collection=COLLECTION,
                )
            )
            turn = await asyncio.to_thread(get_turn, services.db, user_id, outcome.turn_id)
        except TurnFailed as exc:
            error, turn = str(exc), None
            logger.warning("question %s failed: %s", item.id, exc)
        latency = time.perf_counter() - start
        result = score(
            item,
            answer=turn.answer if turn is not None else "",
            retrieved=turn.retrieved if turn is not None else [],
            sources=turn.sources if turn is not None else [],
            at_cap=_at_cap(turn),
            latency_s=latency,
            error=error or (turn.error if turn is not None else None),
        )
        outcomes.append(result)
        if on_done is not None:
            on_done(result)
    return outcomes
