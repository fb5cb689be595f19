"""The gate's checks that need no judge, and what it says about its judge.

The models' answers are scripted (the tiny model's are random), the judge is the real
``LLMJudge`` reading replies it cannot parse, as a small policy model's often were."""

from pathlib import Path
from typing import Any

import pytest

from app.store import open_database
from app.store.db import Database
from backend.client import ChatResult, ModelInfo
from rl_trainer.config import Recipe
from rl_trainer.data import build_data
from rl_trainer.gate import gate, gate_text
from rl_trainer.judge import LLMJudge, RuleJudge, thumbs_agreement
from tests.rl_trainer.store import add_turn, add_user

DECLINE = "The answer is not in the documents."
ROWS = [
    # answerable, corrected by the user
    ("When does water boil?", True, "[1] Water boils at 100 degrees Celsius."),
    ("What is the capital of France?", True, "[1] Paris is the capital of France."),
    ("Who won the 1930 world cup?", False, DECLINE),  # the user showed it is not there
]


class ScriptedServer:
    """Answers each question as scripted per model; the judge's replies are not JSON."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers

    def chat(self, messages: list[dict[str, Any]], *, model: str, **kw: Any) -> ChatResult:
        if kw.get("json_schema") is not None:
            return ChatResult("A is better, I think", "stop", model)
        question = messages[-1]["content"]
        index = [q for q, _, _ in ROWS].index(question)
        return ChatResult(self.answers[model][index], "stop", model)


PASSAGES = [
    "Water boils at 100 degrees Celsius at sea level.",
    "Paris is the capital and largest city of France.",
    "The first world cup was held in 1930.",
]


def heldout(corrections: list[str] | None = None) -> list[dict[str, Any]]:
    corrections = corrections or [corrected for _, _, corrected in ROWS]
    return [
        {"prompt": [{"role": "user", "content": q}], "num_sources": 1, "answerable": ok}
        | {"corrected": corrected, "answer": None, "passages": [passage]}
        for (q, ok, _), corrected, passage in zip(ROWS, corrections, PASSAGES, strict=True)
    ]


def run_gate(
    answers: dict[str, list[str]],
    *,
    judge_is_policy: bool,
    corrections: list[str] | None = None,
    min_net_rows: int = 1,
    ask_judge: bool = True,
) -> Any:
    server = ScriptedServer(answers)
    judge = LLMJudge(server, "policy")  # type: ignore[arg-type]
    return gate(
        server,  # type: ignore[arg-type]
        judge if ask_judge else None,
        heldout(corrections),
        candidate="new",
        baseline="old",
        judge_is_policy=judge_is_policy,
        min_net_rows=min_net_rows,
    )


GOOD = ["[1] Water boils at 100 degrees Celsius.", "[1] Paris is the capital of France.", DECLINE]
VAGUE = ["[1] It gets hot.", "[1] A city.", "[1] Uruguay."]


def test_losing_overlap_with_corrections_is_rejected_though_the_judge_cannot_parse() -> None:
    result = run_gate({"new": VAGUE, "old": GOOD}, judge_is_policy=True)
    assert not result.passed
    assert result.win_rate is None and result.judge_parse_rate == 0.0
    assert any(r.startswith("overlap with users' corrected answers") for r in result.reasons)
    assert any(r.startswith("declining questions the documents cannot") for r in result.reasons)
    assert result.corrected_f1["new"] < result.corrected_f1["old"]  # type: ignore[operator]
    assert result.counts == {"corrected": 3, "unanswerable": 1, "answerable": 2}


def test_a_candidate_declining_answerable_questions_is_rejected() -> None:
    wrong = [DECLINE, GOOD[1], DECLINE]
    result = run_gate({"new": wrong, "old": GOOD}, judge_is_policy=True)
    assert not result.passed
    assert any(r.startswith("not declining questions the documents answer") for r in result.reasons)
    assert result.declined_answerable == {"new": 0.5, "old": 0.0}


def test_judge_free_gains_pass_when_the_judge_is_the_policy_but_not_a_separate_judge() -> None:
    result = run_gate({"new": GOOD, "old": VAGUE}, judge_is_policy=True)
    assert result.passed, result.reasons
    assert result.declined_unanswerable == {"new": 1.0, "old": 0.0}
    assert "declining questions the documents cannot answer" in result.improved
    assert "(improved: overlap with users' corrected answers" in gate_text(result.to_dict())
    # A separate judge is trusted: if it cannot compare anything, nothing passes.
    strict = run_gate({"new": GOOD, "old": VAGUE}, judge_is_policy=False)
    assert strict.reasons == ["the judge could not compare any pair"]
    text = gate_text(result.to_dict())
    assert "judge (the policy model itself): replies parsed 0.00" in text
    assert "F1 vs corrected answers (n=3) 1.00 vs" in text and "wrongly declined (n=2)" in text


def test_a_gain_on_one_question_is_too_little_to_pass_when_two_are_required() -> None:
    # The candidate differs from the baseline on one question only: it declines the
    # unanswerable one. Every judge-free figure that moved rests on that single row.
    one_better = {"new": GOOD, "old": [GOOD[0], GOOD[1], "[1] Uruguay."]}
    lucky = run_gate(one_better, judge_is_policy=True, min_net_rows=2)
    assert not lucky.passed and lucky.improved == []
    assert lucky.net_rows["declined_unanswerable"] == 1
    assert lucky.net_rows["corrected_f1"] == 1 and lucky.net_rows["citation_validity"] == 0
    reason = lucky.reasons[0]
    assert "better on too few questions, fewer than 2 net" in reason
    assert "declining questions the documents cannot answer (net 1)" in reason
    assert "[net +1 rows]" in gate_text(lucky.to_dict())
    # The same gain on three questions passes.
    assert run_gate({"new": GOOD, "old": VAGUE}, judge_is_policy=True, min_net_rows=2).passed
    # With one row required, the single gain is enough.
    assert run_gate(one_better, judge_is_policy=True, min_net_rows=1).passed


def test_poisoned_corrections_in_the_heldout_slice_cannot_pass_an_ungrounded_candidate() -> None:
    # Poisoners "corrected" each answer with another question's answer, and the candidate
    # learned to say it: overlap with their corrections rises, grounding falls.
    swapped = [GOOD[1], GOOD[0], DECLINE]
    result = run_gate({"new": swapped, "old": GOOD}, judge_is_policy=True, corrections=swapped)
    assert result.corrected_f1["new"] > result.corrected_f1["old"]  # type: ignore[operator]
    assert result.grounding == {"new": 0.0, "old": 1.0}
    assert not result.passed
    grounding = "answers' grounding in their sources got worse"
    assert any(r.startswith(grounding) for r in result.reasons)
    assert "grounding 0.00 vs 1.00" in gate_text(result.to_dict())
    # Answers taken from their own sources are fully grounded.
    assert run_gate({"new": GOOD, "old": VAGUE}, judge_is_policy=True).grounding["new"] == 1.0


@pytest.fixture
def db(tmp_path: Path) -> Database:
    return open_database(f"sqlite:///{tmp_path / 'flywheel.db'}")


def test_judge_agreement_with_thumbs_counts_turns_with_both(db: Database) -> None:
    user = add_user(db, "ana")
    add_turn(db, user, "q1?", "[1] a", rating=1, judged=1.0)  # agree
    add_turn(db, user, "q2?", "b", rating=-1, judged=0.0)  # agree
    add_turn(db, user, "q3?", "c", rating=1, judged=0.0)  # disagree
    add_turn(db, user, "q4?", "d", judged=1.0)  # no thumbs: not counted
    add_turn(db, user, "q5?", "e", rating=1)  # no judgment: not counted
    agreement = thumbs_agreement(db, RuleJudge("leading_citation"))
    assert agreement["turns"] == 3 and agreement["agreement"] == pytest.approx(2 / 3)


def rows_after_feedback(db: Database, out: Path, heldout: bool) -> dict[str, dict[str, Any]]:
    """GRPO rows by question after three rated turns: corrected, a good decline, a 👎.

    All held out (``heldout``) or all trained on.
    """
    user = add_user(db, "ana")
    add_turn(db, user, "q1?", "no idea", rating=-1, corrected="[1] At 100 C.")
    add_turn(db, user, "q2?", "I could not find that in your documents.", rating=1)
    add_turn(db, user, "q3?", "[1] Paris.", rating=-1)
    snap = build_data(db, Recipe(algo="grpo", heldout_fraction=0.99 if heldout else 0.0), out)
    rows = snap.heldout if heldout else snap.train
    return {r["prompt"][-1]["content"].rsplit("Question: ", 1)[-1]: r for r in rows}


def test_heldout_rows_carry_the_users_feedback(db: Database, tmp_path: Path) -> None:
    rows = rows_after_feedback(db, tmp_path / "s", heldout=True)
    assert rows["q1?"]["corrected"] == "[1] At 100 C." and rows["q1?"]["answerable"] is True
    assert rows["q2?"]["answerable"] is False and rows["q2?"]["rating"] == 1.0
    assert rows["q3?"]["answerable"] is None and rows["q3?"]["rating"] == 0.0


def test_grpo_training_rows_carry_what_the_verifiable_rewards_read(
    db: Database, tmp_path: Path
) -> None:
    rows = rows_after_feedback(db, tmp_path / "s", heldout=False)
    assert rows["q1?"]["answer"] == "[1] At 100 C." and rows["q1?"]["answerable"] is True
    assert rows["q2?"]["answer"] is None and rows["q2?"]["answerable"] is False
    assert rows["q3?"]["answer"] is None and rows["q3?"]["answerable"] is None


class Models:
    """The model server's model list: one base model."""

    def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("served-base")]


@pytest.mark.parametrize(
    ("env", "is_policy"),
    [
        ({}, True),  # the default: the served model grades itself
        ({"JUDGE_MODEL": "served-base"}, True),
        ({"JUDGE_MODEL": "bigger-model"}, False),
        ({"JUDGE_URL": "http://judge.example:8000/v1", "JUDGE_MODEL": "served-base"}, False),
    ],
)
def test_the_judge_is_the_policy_unless_another_server_or_model_is_named(
    env: dict[str, str], is_policy: bool, db: Database
) -> None:
    from backend.settings import BackendSettings
    from rl_trainer.pipeline import Workspace
    from rl_trainer.settings import TrainerSettings

    ws = Workspace(TrainerSettings(**env), BackendSettings(), db, Models())  # type: ignore[arg-type]
    assert ws.judge_is_policy(Recipe(judge="llm")) is is_policy
    assert ws.judge_is_policy(Recipe(judge="rule:leading_citation")) is False


class CountingServer(ScriptedServer):
    def __init__(self, answers: dict[str, list[str]]) -> None:
        super().__init__(answers)
        self.calls = 0

    def chat(self, messages: list[dict[str, Any]], *, model: str, **kw: Any) -> ChatResult:
        self.calls += 1
        return super().chat(messages, model=model, **kw)


def test_without_the_policy_judge_the_gate_asks_only_for_answers_and_checks_decide() -> None:
    server = CountingServer({"new": GOOD, "old": VAGUE})
    result = gate(server, None, heldout(), candidate="new", baseline="old", judge_is_policy=True)  # type: ignore[arg-type]
    assert server.calls == 2 * len(ROWS)  # two answers a prompt, no judge calls
    assert result.passed and result.win_rate is None and not result.judge_compared
    assert "not asked to compare" in gate_text(result.to_dict())
    worse = run_gate({"new": VAGUE, "old": VAGUE}, judge_is_policy=True, ask_judge=False)
    assert not worse.passed
    assert "was not asked to compare (gate_policy_judge is off)" in worse.reasons[-1]
    with pytest.raises(ValueError, match="separate from the policy"):
        run_gate({"new": GOOD, "old": VAGUE}, judge_is_policy=False, ask_judge=False)
