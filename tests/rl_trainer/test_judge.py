from pathlib import Path

import pytest

from app.store import open_database
from app.store.models import Judgment
from backend.client import ModelClient
from rl_trainer.judge import (
    LLMJudge,
    RuleJudge,
    judge_turns,
    make_judge,
    parse_pairwise,
    parse_pointwise,
)
from tests.rl_trainer.store import add_turn, add_user, count


def test_pointwise_parses_json_even_inside_prose_or_fences() -> None:
    body = '{"groundedness": 5, "helpfulness": 3, "citations": 1, "rationale": "ok"}'
    raw = f"Sure!\n```json\n{body}\n```"
    verdict = parse_pointwise(raw)
    assert verdict is not None
    assert verdict.scores == {"groundedness": 5.0, "helpfulness": 3.0, "citations": 1.0}
    assert verdict.overall == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert verdict.rationale == "ok"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "garbage \x00 text",
        "{not json}",
        '{"groundedness": 5, "helpfulness": 3}',  # a criterion missing
        '{"groundedness": 9, "helpfulness": 3, "citations": 1}',  # off the scale
        '{"groundedness": "5", "helpfulness": 3, "citations": 1}',  # a string, not a score
        '{"groundedness": true, "helpfulness": 3, "citations": 1}',
        "[1, 2, 3]",
    ],
)
def test_unparseable_pointwise_output_is_no_verdict(raw: str) -> None:
    assert parse_pointwise(raw) is None


def test_pairwise_parsing() -> None:
    assert parse_pairwise('{"winner": "A", "rationale": "x"}') == "A"
    assert parse_pairwise('{"winner": "b"}') == "B"
    assert parse_pairwise('{"winner": "tie"}') == "tie"
    for raw in ("", "A", '{"winner": "C"}', '{"verdict": "A"}'):
        assert parse_pairwise(raw) is None


class Scripted:
    """A judge client that answers pairwise prompts from a script (to check both orders)."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = replies
        self.prompts: list[str] = []

    def chat(self, messages, **_):  # type: ignore[no-untyped-def]
        from backend.client import ChatResult

        self.prompts.append(messages[-1]["content"])
        return ChatResult(self.replies.pop(0), "stop", "judge")


def test_pairwise_asks_both_orders_and_cancels_position_bias() -> None:
    # A judge that always prefers whatever is shown first: the two orders cancel out.
    client = Scripted(['{"winner": "A"}', '{"winner": "A"}'])
    judge = LLMJudge(client, "judge")  # type: ignore[arg-type]
    assert judge.compare([{"role": "user", "content": "q"}], "good", "bad", {}) == 0.5
    assert client.prompts[0].index("good") < client.prompts[0].index("bad")
    assert client.prompts[1].index("bad") < client.prompts[1].index("good")
    # A consistent judge: a clear win; one garbage order is left out, not counted as a tie.
    judge = LLMJudge(Scripted(['{"winner": "A"}', "garbage"]), "judge")  # type: ignore[arg-type]
    assert judge.compare([], "good", "bad", {}) == 1.0
    judge = LLMJudge(Scripted(["garbage", "garbage"]), "judge")  # type: ignore[arg-type]
    assert judge.compare([], "good", "bad", {}) is None


def test_rule_judge_scores_and_compares() -> None:
    judge = make_judge("rule:leading_citation", None, None)
    assert isinstance(judge, RuleJudge) and judge.model == "rule:leading_citation"
    verdict = judge.score([], "[1] yes", {"num_sources": 1})
    assert verdict is not None and verdict.overall == 1.0
    assert judge.compare([], "[1] yes", "yes", {"num_sources": 1}) == 1.0
    assert judge.compare([], "yes", "no", {"num_sources": 1}) == 0.5
    with pytest.raises(ValueError, match="unknown rule judge"):
        make_judge("rule:nope", None, None)


@pytest.mark.slow
def test_garbage_from_a_real_model_stores_no_judgment(tmp_path: Path, model_server) -> None:  # type: ignore[no-untyped-def]
    db = open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")
    user = add_user(db, "u")
    for i in range(3):
        add_turn(db, user, f"question {i}?", "an answer")
    with ModelClient(model_server.url, api_key=model_server.key) as client:
        base = next(m.id for m in client.list_models() if m.parent is None)
        stats = judge_turns(db, LLMJudge(client, base, max_tokens=16))
    # The tiny random model, even held to the rubric's schema, is cut off by max_tokens
    # before the JSON closes: an unfinished reply is no score, never a made-up one.
    assert stats.judged == 0 and stats.unparseable == 3
    assert count(db, Judgment) == 0
    # A judge that can answer fills the gaps, and only once.
    rule = RuleJudge("leading_citation")
    assert judge_turns(db, rule).judged == 3
    again = judge_turns(db, rule)
    assert again.judged == 0 and again.already == 3
    assert count(db, Judgment) == 3


def test_rated_turns_are_judged_only_up_to_the_runs_limit(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")
    user = add_user(db, "u")
    add_turn(db, user, "unrated?", "an answer")
    for i in range(3):
        add_turn(db, user, f"rated {i}?", "an answer", rating=1)
    stats = judge_turns(db, RuleJudge("leading_citation"), rated_limit=1)
    # Every unrated turn (its judgment is its signal), one rated turn (for agreement).
    assert (stats.judged, stats.rated_skipped) == (2, 2)
    assert judge_turns(db, RuleJudge("leading_citation"), rated_limit=1).judged == 1
