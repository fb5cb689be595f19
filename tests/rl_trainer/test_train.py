import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.agent import prompts
from backend.client import ModelClient
from rl_trainer.config import load_recipe
from rl_trainer.data import Snapshot
from rl_trainer.train import METRICS_FILE, train

FACTS = [
    ("Water boils at 100 degrees Celsius.", "When does water boil?"),
    ("The capital of France is Paris.", "What is the capital of France?"),
    ("Rust is a programming language.", "What is Rust?"),
    ("Ice melts at 0 degrees.", "When does ice melt?"),
]


def prompt(fact: str, question: str) -> list[dict[str, str]]:
    chunks = [{"title": "facts", "text": fact}]
    return [
        {"role": "system", "content": prompts.ANSWER_SYSTEM},
        {"role": "user", "content": prompts.user_message(question, chunks, [])},  # type: ignore[arg-type]
    ]


def rows(algo: str) -> list[dict[str, Any]]:
    if algo == "dpo":
        return [
            {
                "prompt": prompt(f, q),
                "chosen": [{"role": "assistant", "content": f"[1] {f}"}],
                "rejected": [{"role": "assistant", "content": "I do not know."}],
            }
            for f, q in FACTS
        ]
    return [
        {"prompt": prompt(f, q), "num_sources": 1, "answerable": True, "answer": None}
        for f, q in FACTS
    ]


def letter_e(completions: list[Any], **_: Any) -> list[float | None]:
    """Varies between random completions, so GRPO's advantages are not all zero."""
    texts = [c if isinstance(c, str) else c[0]["content"] for c in completions]
    return [t.count("e") / max(len(t), 1) for t in texts]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["dpo", "grpo"])
def test_training_changes_only_the_lora_and_the_adapter_serves(
    algo: str, tiny_chat_model: Path, model_server: Any, tmp_path: Path
) -> None:
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_chat_model)).state_dict()
    overrides: dict[str, Any] = {"init": "fresh", "max_steps": 3}
    if algo == "grpo":
        overrides["rewards"] = {"letter_e": 1.0, "citation_validity": 0.5}
    recipe = load_recipe(f"tiny-{algo}", **overrides)
    run_dir = tmp_path / "run"
    result = train(
        recipe,
        Snapshot(tmp_path / "data", algo, rows(algo), []),
        str(tiny_chat_model),
        run_dir,
        extra_rewards={"letter_e": letter_e},
    )
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA B starts at 0 and must move"
    after = result.model.unload().state_dict()
    assert after.keys() == base.keys()
    assert all((after[k] == base[k]).all() for k in base), "base weights must not change"

    logged = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines()]
    assert [m["step"] for m in logged if "loss" in m] == [1, 2, 3]
    if algo == "grpo":
        assert "rewards/letter_e/mean" in logged[0] and "kl" in logged[0]
    else:
        assert "rewards/margins" in logged[0]
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))

    served = model_server.adapters / f"train-{algo}"
    shutil.copytree(result.adapter_dir, served)
    with ModelClient(model_server.url, api_key=model_server.key) as client:
        client.load_adapter(f"train-{algo}", str(served))
        reply = client.chat(
            [{"role": "user", "content": "Hi"}], model=f"train-{algo}", max_tokens=4, temperature=0
        )
        assert reply.model == f"train-{algo}"
        assert reply.usage is not None and reply.usage.completion_tokens > 0
        client.unload_adapter(f"train-{algo}")
