import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from rl_trainer.config import load_recipe
from rl_trainer.data import Snapshot
from rl_trainer.monitors import AnswerSample, MonitorLimits, answer_figures, compare
from rl_trainer.train import METRICS_FILE, MONITORS_FILE, train

ANSWERS = [
    "Paris is the capital of France [1].",
    "Water boils at 100 degrees Celsius [1].",
    "Rust is a programming language [2].",
    "Ice melts at 0 degrees [1].",
    "The study found the treatment reduced risk [1][2].",
]
# The same answers told at twice the length, each in its own words (no stock phrase).
LONGER = [
    "Paris is the capital of France, and its government has sat there for centuries [1].",
    "Water boils at 100 degrees Celsius at sea level; higher up it boils sooner [1].",
    "Rust is a programming language focused on memory safety without a garbage collector [2].",
    "Ice melts at 0 degrees, the same temperature at which liquid water freezes again [1].",
    "The study found the treatment reduced risk, most clearly in patients under sixty [1][2].",
]
DECLINE = "The answer is not in the documents."


def samples(answers: list[str], n: int = 10, **kw: Any) -> list[AnswerSample]:
    return [AnswerSample(answers[i % len(answers)], n_sources=2, **kw) for i in range(n)]


def test_answer_figures_count_length_diversity_declining_and_citations() -> None:
    figures = answer_figures(
        [
            AnswerSample("Paris is the capital [1].", 2),
            AnswerSample("Paris is the capital [3].", 2),  # cites a source it was not given
            AnswerSample(DECLINE, 2),
            AnswerSample("Yes.", 2),  # answers without citing
        ]
    )
    assert figures["n"] == 4
    assert figures["mean_length"] == (5 + 5 + 7 + 1) / 4
    # 4 + 4 + 6 bigrams; the second answer repeats 3 of the first's ("[1]." vs "[3]." differ)
    assert figures["distinct_2"] == pytest.approx(11 / 14)
    assert figures["declining_share"] == 0.25
    assert figures["citation_validity"] == pytest.approx(1 / 3)  # of the 3 that answer
    assert figures["judge_thumbs_agreement"] is None
    assert answer_figures([])["mean_length"] is None


def test_judge_thumbs_agreement_needs_five_pairs() -> None:
    agree = [AnswerSample("a", 1, rating=1, judge=0.9)] * 3
    disagree = [AnswerSample("a", 1, rating=-1, judge=0.8)] * 2
    assert answer_figures(agree + disagree[:1])["judge_thumbs_agreement"] is None
    assert answer_figures(agree + disagree)["judge_thumbs_agreement"] == pytest.approx(0.6)


def test_a_canary_twice_as_long_trips_length_only() -> None:
    control = answer_figures(samples(ANSWERS))
    canary = answer_figures(samples(LONGER))
    trips = compare(canary, control, MonitorLimits())
    assert [t.monitor for t in trips] == ["mean_length"]
    assert trips[0].value > 0.5 and trips[0].limit == 0.5
    assert "against control" in trips[0].message and "limit 50%" in trips[0].message
    assert compare(control, control, MonitorLimits()) == []


def test_a_canary_that_declines_everything_trips_declining_share() -> None:
    control = answer_figures(samples(ANSWERS))
    canary = answer_figures(samples([DECLINE]))
    monitors = {t.monitor for t in compare(canary, control, MonitorLimits())}
    assert "declining_share" in monitors
    # Declined answers are not counted against citations: no double trip.
    assert "citation_validity" not in monitors


def test_invalid_citations_and_judge_drift_trip() -> None:
    control = answer_figures(samples(ANSWERS))
    bad = [a.replace("[1]", "[7]") for a in ANSWERS]
    canary = answer_figures(samples(bad, rating=-1, judge=0.9))
    monitors = {t.monitor for t in compare(canary, control, MonitorLimits())}
    assert monitors == {"citation_validity", "judge_thumbs_agreement"}


def test_too_few_samples_or_a_monitor_off_trips_nothing() -> None:
    control = answer_figures(samples(ANSWERS))
    canary = answer_figures(samples([DECLINE], n=9))
    assert compare(canary, control, MonitorLimits()) == []
    canary = answer_figures(samples([DECLINE]))
    # One stock sentence also collapses distinct-2; with both monitors off, nothing trips.
    off = MonitorLimits(max_declining_rise=None, max_distinct_2_drop=None)
    assert compare(canary, control, off) == []


def test_adaptive_kl_raises_beta_above_target_and_lowers_it_below() -> None:
    from rl_trainer.kl_control import BETA_KEY, AdaptiveKL

    trainer = SimpleNamespace(beta=0.1)
    adaptive = AdaptiveKL(target=0.05, horizon=100, trainer=trainer)
    args = SimpleNamespace(
        per_device_train_batch_size=4, gradient_accumulation_steps=1, world_size=1
    )
    logs: dict[str, float] = {"kl": 0.5}  # 10x the target: the error is clipped to +0.2
    adaptive.on_log(args, SimpleNamespace(global_step=5), None, logs)
    assert trainer.beta == pytest.approx(0.1 * (1 + 0.2 * 20 / 100))
    assert logs[BETA_KEY] == trainer.beta
    before = trainer.beta
    adaptive.on_log(args, SimpleNamespace(global_step=6), None, {"kl": 0.04})
    assert trainer.beta == pytest.approx(before * (1 - 0.2 * 4 / 100))
    adaptive.on_log(args, SimpleNamespace(global_step=7), None, {"loss": 1.0})  # no kl: no change
    assert len(adaptive.history) == 2

    with pytest.raises(ValueError, match="initial beta above 0"):
        AdaptiveKL(target=0.05, horizon=100, trainer=SimpleNamespace(beta=0.0))
    with pytest.raises(ValueError, match="starting beta above 0"):
        load_recipe("tiny-grpo", kl_target=0.05, beta=0.0)
    with pytest.raises(ValueError, match="kl_target is for GRPO"):
        load_recipe("tiny-dpo", kl_target=0.05)


def test_training_monitor_stops_on_kl_and_length() -> None:
    from rl_trainer.kl_control import TrainingMonitor

    monitor = TrainingMonitor(MonitorLimits(max_kl=0.5))
    control = SimpleNamespace(should_training_stop=False)
    for step, kl, length in [(1, 0.1, 10.0), (2, 0.2, 14.0)]:
        logs = {"kl": kl, "completions/mean_length": length}
        monitor.on_log(None, SimpleNamespace(global_step=step), control, logs)
    assert not control.should_training_stop and monitor.baseline_length == 10.0
    monitor.on_log(None, SimpleNamespace(global_step=3), control, {"kl": 0.7})
    assert control.should_training_stop and [t.monitor for t in monitor.trips] == ["kl"]
    monitor.on_log(None, SimpleNamespace(global_step=4), control, {"completions/mean_length": 4.0})
    assert monitor.trips[-1].monitor == "mean_length" and monitor.trips[-1].value == -0.6
    assert monitor.trips[-1].step == 4 and "-60%" in monitor.trips[-1].message


# --- the test: a reward that invites hacking trips the length monitor -------------

QUESTIONS = [
    "When does water boil?",
    "What is the capital of France?",
    "What is Rust?",
    "When does ice melt?",
]
EOS_BOOST = 4.5  # the EOS logit over the prompts, in their mean direction: ~8-token answers


def length(completions: list[Any], completion_ids: list[list[int]], **_: Any) -> list[float | None]:
    """Rewards talking longer: the hack the length monitor is for."""
    return [float(len(ids)) for ids in completion_ids]


def short_answering_model(tiny: Path, out: Path) -> Path:
    """The tiny model made to end its answers early, so that longer is learnable.

    The random tiny model almost never samples its end token (1 in 601 under TRL's
    top_k=0 sampling), so its answers always run to the length cap and cannot grow. Its
    EOS row (tied with the embedding) is set along the mean final hidden state of the
    prompts, which makes EOS likely at every position; the LoRA can learn to put it off.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny))
    model = AutoModelForCausalLM.from_pretrained(str(tiny))
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    encoded: Any = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)
        for c in chats
    ]
    with torch.no_grad():
        hidden = torch.cat(
            [
                model.model(input_ids=torch.tensor([e["input_ids"]])).last_hidden_state[0]
                for e in encoded
            ]
        )
        direction = hidden.mean(0) / hidden.mean(0).norm()
        scale = (hidden @ direction).mean()
        model.lm_head.weight[model.config.eos_token_id] = EOS_BOOST * direction / scale
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out


@pytest.mark.slow
def test_a_length_reward_trips_the_length_monitor_and_stops_training(
    tiny_chat_model: Path, tmp_path: Path
) -> None:
    base = short_answering_model(tiny_chat_model, tmp_path / "short-model")
    recipe = load_recipe(
        "tiny-grpo",
        init="fresh",
        rewards={"length": 1.0},
        max_steps=8,  # with this reward the length passes +50% by step 3 (constant: 7-11 tokens)
        per_device_train_batch_size=16,
        num_generations=8,
        max_completion_length=32,
        monitor_max_kl=0,  # off: this test is about length
    )
    rows = [
        {"prompt": [{"role": "user", "content": q}], "num_sources": 0, "answerable": None}
        for q in QUESTIONS
    ]
    run_dir = tmp_path / "run"
    result = train(
        recipe,
        Snapshot(tmp_path / "data", "grpo", rows, []),
        str(base),
        run_dir,
        extra_rewards={"length": length},
    )
    logged = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    lengths = [m["completions/mean_length"] for m in logged if "completions/mean_length" in m]
    steps = [m["step"] for m in logged if "loss" in m]
    assert steps[-1] < recipe.max_steps, f"the monitor must stop training early: {lengths}"
    assert lengths[-1] > 1.5 * lengths[0]
    assert [t["monitor"] for t in result.tripped] == ["mean_length"]
    assert result.tripped[0]["value"] > recipe.monitor_max_length_drift  # longer, not shorter
    assert result.tripped[0]["step"] == steps[-1]
    saved = json.loads((run_dir / MONITORS_FILE).read_text())
    assert saved["trips"] == result.tripped and saved["stopped_at_step"] == steps[-1]
    assert result.adapter_dir.is_dir()  # saved for inspection; the caller does not publish it
