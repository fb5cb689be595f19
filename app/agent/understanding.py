"""Reading the query-rewrite step's reply, and checking it before the agent acts on it.

The model server decodes the reply under ``prompts.UNDERSTAND_SCHEMA``, so its shape is
guaranteed; its content is not. A 135M model copies the assistant's last sentence as the
"standalone" query, sends real questions "direct", repeats itself and echoes placeholders.
So each field is kept only when it passes a check a reader would make:

* ``standalone`` must share a content word with the last message (else the message is
  searched as asked, with the model's rewrite appended as context) and must not be a
  runaway repetition;
* ``direct`` (answer without searching) is believed only for small talk;
* ``sub_queries`` must each share a content word with the message, be distinct, and be at
  least two (one is just the standalone query).
"""

from __future__ import annotations

import json
import re
from typing import Any

from app.agent.words import WORD as _WORD
from app.agent.words import content_words

SMALL_TALK = re.compile(
    r"^\s*(hi|hello|hey|hallo|good (morning|afternoon|evening)|thanks?( you)?( (so|very) "
    r"much| a lot)?|thank you|ok(ay)?|bye|goodbye|how are you)\b[\s!.?]*$",
    re.IGNORECASE,
)
# A message that tells the agent about the user ("My name is Ana and I work on cats") is
# for memory, not a search: answering it with "not in your documents" would be absurd.
PERSONAL = re.compile(
    r"^\s*(my (name|job|work|wife|husband|partner|favou?rite\w*|birthday) (is|are)|call me|"
    r"i am|i'm|i work|i live|i like|i love|i prefer|i have|i was born|i study|"
    r"please remember|remember that)\b",
    re.IGNORECASE,
)
# ...unless it goes on to ask something of the documents.
_ASKS = re.compile(
    r"\?|\b(what|how|why|when|where|who|which|whether|can you|could you|would you|tell me|"
    r"looking for|want to know|wonder|find|search|explain|summari[sz]e|question)\b",
    re.IGNORECASE,
)
MAX_SUB_QUERIES = 3
_MAX_QUERY_CHARS = 300


def parse_understanding(raw: str, question: str) -> tuple[str, str, list[str]]:
    """``(standalone, route, sub_queries)`` from the model's reply, each field checked.

    The question as asked and ``retrieve`` when the reply cannot be read.
    """
    data = _json_object(raw)
    if data is None:
        return question, "retrieve", []
    asked = content_words(question)
    standalone = _standalone(data.get("standalone"), question, asked)
    route = "direct" if data.get("route") == "direct" and _is_small_talk(question) else "retrieve"
    raw_subs = data.get("sub_queries")
    subs: list[str] = []
    for sub in raw_subs if isinstance(raw_subs, list) else []:
        if not isinstance(sub, str) or not _plausible(sub, asked):
            continue
        sub = sub.strip()
        if sub.lower() != standalone.lower() and sub.lower() not in {s.lower() for s in subs}:
            subs.append(sub)
    subs = subs[:MAX_SUB_QUERIES]
    return standalone, route, subs if len(subs) > 1 else []


def _json_object(raw: str) -> dict[str, Any] | None:
    match = re.search(r"\{.*\}", raw, re.DOTALL)
    try:
        data = json.loads(match.group(0) if match else raw)
    except (json.JSONDecodeError, TypeError):
        return None
    return data if isinstance(data, dict) else None


def _standalone(value: Any, question: str, asked: set[str]) -> str:
    if not isinstance(value, str) or not value.strip() or _runaway(value):
        return question
    value = value.strip()
    if _plausible(value, asked) or not asked:
        return value
    # The rewrite lost the question's topic ("How tall is it?" -> a sentence about the
    # mountain): search both, so neither the question nor what "it" means is lost.
    return f"{question} {value}"[:_MAX_QUERY_CHARS]


def _plausible(text: str, asked: set[str]) -> bool:
    """On the question's topic, no placeholder, not a runaway repetition."""
    if "<" in text or re.search(r"\b(sub_?query|query)_?\d\b", text, re.IGNORECASE):
        return False
    return bool(content_words(text) & asked) and not _runaway(text)


def _runaway(text: str) -> bool:
    """A small model's loop: long text in which a few words make up most of it."""
    words = _WORD.findall(text.lower())
    return len(words) > 12 and len(set(words)) < len(words) / 2


def is_personal_statement(message: str) -> bool:
    """Whether ``message`` tells the agent about the user and asks nothing."""
    return bool(PERSONAL.match(message)) and not _ASKS.search(message)


def _is_small_talk(question: str) -> bool:
    return bool(SMALL_TALK.match(question)) or not content_words(question)
