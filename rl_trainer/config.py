"""The recipe: one flat dataclass whose fields are the keys of a YAML file.

A recipe is the record of a run (it is copied into the adapter's manifest), so every
knob that changes what gets trained lives here, each with its help text, and
``__post_init__`` refuses combinations that cannot work before any model is loaded.
Bundled recipes live in ``rl_trainer/recipes/`` and can be named without their path.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rl_trainer.monitors import MonitorLimits

RECIPES_DIR = Path(__file__).parent / "recipes"


@dataclass
class Recipe:
    """Everything that decides what ``rl-trainer run`` trains, and how it is judged."""

    algo: Literal["dpo", "grpo"] = field(
        default="dpo", metadata={"help": "Training algorithm: preference pairs (dpo) or grpo."}
    )
    init: Literal["active", "fresh"] = field(
        default="active",
        metadata={"help": "Start from the active adapter's weights, or from a fresh LoRA."},
    )
    # LoRA
    lora_r: int = field(default=16, metadata={"help": "LoRA rank (<= the server's max rank)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "Module names that get LoRA weights."},
    )
    # Optimisation
    learning_rate: float = field(default=5e-6, metadata={"help": "Peak learning rate."})
    max_steps: int = field(default=100, metadata={"help": "Optimizer steps."})
    per_device_train_batch_size: int = field(
        default=4, metadata={"help": "Examples (DPO pairs or GRPO completions) per device step."}
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Micro-batches per optimizer step."}
    )
    warmup_steps: float = field(
        default=0.0, metadata={"help": "Warm-up steps, or a fraction of max_steps when below 1."}
    )
    lr_scheduler_type: str = field(default="constant", metadata={"help": "LR schedule."})
    max_length: int = field(
        default=2048,
        metadata={
            "help": "Longest training row in tokens: DPO prompt + answer; GRPO prompt + "
            "max_completion_length. Longer rows lose trailing source text to fit (never the "
            "question or answers); rows that cannot fit are dropped and counted."
        },
    )
    beta: float = field(
        default=0.1,
        metadata={"help": "KL strength to the base model (DPO beta; GRPO KL coefficient)."},
    )
    loss_type: str | list[str] = field(
        default="sigmoid",
        metadata={
            "help": "TRL loss: for DPO one or a list (e.g. [sigmoid, sft], weighted by "
            "loss_weights); for GRPO one of dapo|grpo|dr_grpo|bnpo|..."
        },
    )
    loss_weights: list[float] | None = field(
        default=None, metadata={"help": "Weights of a list of DPO losses (default: all 1)."}
    )
    seed: int = field(default=0, metadata={"help": "Random seed of data order and sampling."})
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata={"help": "Train on cpu, cuda, or whichever is present."}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "torch threads when training on CPU (None: torch's default). 1 is often "
            "fastest for small models on a busy machine."
        },
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Trade compute for memory (useful on big models)."}
    )
    logging_steps: int = field(default=1, metadata={"help": "Log metrics every N steps."})
    # GRPO
    num_generations: int = field(
        default=4, metadata={"help": "Completions sampled per prompt (GRPO group size)."}
    )
    max_completion_length: int = field(
        default=256,
        metadata={"help": "Longest sampled completion in tokens (GRPO, fresh DPO pairs)."},
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (GRPO)."})
    rewards: dict[str, float] = field(
        default_factory=lambda: {"judge": 1.0, "citation_validity": 0.5, "soft_overlong": 0.5},
        metadata={"help": "GRPO reward functions (names in rewards.REWARDS) and their weights."},
    )
    overlong_buffer: int = field(
        default=64,
        metadata={"help": "Tokens before max_completion_length where the length penalty starts."},
    )
    use_vllm: bool = field(
        default=False,
        metadata={"help": "Generate GRPO rollouts with vLLM in colocate mode (needs vllm)."},
    )
    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "Adaptive KL (GRPO): move beta so the logged KL to the base tends to this "
            "(nats/token), as veRL's AdaptiveKLController; beta is the starting value and "
            "must be above 0. None keeps beta fixed."
        },
    )
    kl_horizon: int = field(
        # veRL and OpenRLHF use 10,000 samples with batches of ~1,000; our recipes train
        # 400-32,000 completions a run, so 2,000 lets beta move ~1.2x per 2,000
        # completions at the clipped error, about 3.6x over qwen2.5-1.5b-grpo's 12,800.
        default=2000,
        metadata={
            "help": "Adaptive KL horizon in completions: beta changes by at most 20% of the "
            "KL error per this many completions trained."
        },
    )
    # Monitors (rl_trainer.monitors): crossing one stops training and is reported.
    monitor_max_kl: float | None = field(
        default=MonitorLimits.max_kl,
        metadata={
            "help": "Stop training when the logged KL to the base (nats/token, GRPO with "
            "beta > 0) goes above this; 0 or None turns the monitor off."
        },
    )
    monitor_max_length_drift: float | None = field(
        default=MonitorLimits.max_length_drift,
        metadata={
            "help": "Stop training when the mean completion length (GRPO) moves by more than "
            "this fraction from its first logged value (each logged value averages "
            "logging_steps steps: raise it to smooth small batches); 0 or None turns it off."
        },
    )
    # Data
    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "GRPO prompts from a JSONL of {question, answer} (e.g. gsm8k/train.jsonl, "
            "relative to DATASETS_DIR) instead of the store."
        },
    )
    dataset_limit: int | None = field(
        default=None, metadata={"help": "Use at most this many rows of dataset_path."}
    )
    heldout_fraction: float = field(
        default=0.2, metadata={"help": "Share of threads held out of training for the gate."}
    )
    max_ratings_per_user_per_day: int = field(
        default=20, metadata={"help": "Ratings counted per user per day (one user cannot steer)."}
    )
    max_turns_per_user: int = field(
        default=200,
        metadata={"help": "Most recent turns with a signal kept per user in a snapshot."},
    )
    max_user_share: float = field(
        default=0.5,
        metadata={
            "help": "Refuse a snapshot where one user's share of the training rows is above "
            "this; checked once 2 or more users contributed (1 user: a personal deployment)."
        },
    )
    min_correction_support: float = field(
        default=0.5,
        metadata={
            "help": "Share of a corrected answer's content words that must appear in the "
            "turn's sources; a correction below it teaches answers the documents do not hold "
            "(a mistake, or poisoning) and is left out, counted as ungrounded_corrections. "
            "On ClapNQ dev a reference scores >= 0.83 against its passages in 95% of "
            "questions, another question's reference <= 0.30. 0 turns the check off."
        },
    )
    judge_margin: float = field(
        default=0.2,
        metadata={"help": "Judge scores (0..1) of two answers must differ this much to pair."},
    )
    fresh_pairs: int = field(
        default=0,
        metadata={"help": "DPO pairs sampled from the current adapter and ranked by the judge."},
    )
    # Judge and gate
    judge: str = field(
        default="llm",
        metadata={
            "help": "'llm' (the LLM judge in the settings) or 'rule:<reward>' to score with a "
            "reward function instead (tests, toy loops)."
        },
    )
    judge_rated_limit: int | None = field(
        default=8,
        metadata={
            "help": "Turns users rated that the judge scores per run (None: all). A rating is "
            "already the training signal; these only measure the judge's agreement with "
            "thumbs, and judging every one cost a SmolLM2 round 3.6 of its minutes."
        },
    )
    gate_threshold: float = field(
        default=0.55, metadata={"help": "Candidate's pairwise win rate needed to pass."}
    )
    gate_max_tokens: int = field(
        default=256, metadata={"help": "Longest answer generated per held-out prompt."}
    )
    gate_limit: int | None = field(
        default=None, metadata={"help": "Use at most this many held-out prompts."}
    )
    gate_policy_judge: bool = field(
        default=True,
        metadata={
            "help": "Ask the judge to compare each held-out pair when the judge is the policy "
            "model itself. Off where that measured nothing: SmolLM2 judging its own answers "
            "gave a win rate of 0.50 in every round, and its two calls per prompt were about "
            "40% of the gate's time. The judge-free checks then decide alone."
        },
    )
    gate_min_net_rows: int = field(
        default=2,
        metadata={
            "help": "A judge-free figure counts as improved only when the candidate does "
            "better on at least this many more held-out questions than it does worse: on "
            "a few rows, one lucky answer moves a mean a long way."
        },
    )

    def __post_init__(self) -> None:
        if self.algo not in ("dpo", "grpo"):
            raise ValueError(f"algo is {self.algo!r}; expected 'dpo' or 'grpo'")
        if self.algo == "grpo" and self.num_generations < 2:
            raise ValueError(
                f"GRPO needs at least 2 generations per prompt (num_generations="
                f"{self.num_generations}); raise num_generations"
            )
        if self.algo == "grpo":
            batch = self.per_device_train_batch_size * self.gradient_accumulation_steps
            if batch % self.num_generations:
                raise ValueError(
                    f"per_device_train_batch_size x gradient_accumulation_steps = {batch} is "
                    f"not a multiple of num_generations={self.num_generations}; make it one"
                )
            if not isinstance(self.loss_type, str):
                raise ValueError(f"GRPO takes one loss_type, got {self.loss_type!r}")
            if not self.rewards:
                raise ValueError("GRPO needs at least one reward in 'rewards'")
        if self.kl_target is not None:
            if self.algo != "grpo":
                raise ValueError(f"kl_target is for GRPO; the recipe trains {self.algo}")
            if self.kl_target <= 0:
                raise ValueError(f"kl_target={self.kl_target} must be above 0, or None")
            if self.beta <= 0:
                raise ValueError(
                    f"kl_target needs a starting beta above 0 (beta={self.beta}): with beta 0 "
                    "TRL computes no KL to adapt; set beta, e.g. 0.04"
                )
        if self.kl_horizon < 1:
            raise ValueError(f"kl_horizon={self.kl_horizon} must be at least 1")
        monitors = {
            "monitor_max_kl": self.monitor_max_kl,
            "monitor_max_length_drift": self.monitor_max_length_drift,
        }
        for name, limit in monitors.items():
            if limit is not None and limit < 0:
                raise ValueError(f"{name}={limit} is negative; 0 or None turns it off")
        if self.beta < 0:
            raise ValueError(f"beta={self.beta} is negative; use 0 (no KL) or more")
        if self.gate_min_net_rows < 1:
            raise ValueError(f"gate_min_net_rows={self.gate_min_net_rows} must be at least 1")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction={self.heldout_fraction} must be in [0, 1)")
        if self.max_turns_per_user < 1:
            raise ValueError(f"max_turns_per_user={self.max_turns_per_user} must be at least 1")
        if not 0.0 < self.max_user_share <= 1.0:
            raise ValueError(
                f"max_user_share={self.max_user_share} must be in (0, 1]; 1 turns the check off"
            )
        if not 0.0 <= self.min_correction_support <= 1.0:
            raise ValueError(
                f"min_correction_support={self.min_correction_support} must be in [0, 1]"
            )
        if not 0.0 < self.gate_threshold <= 1.0:
            raise ValueError(f"gate_threshold={self.gate_threshold} must be in (0, 1]")
        if self.judge != "llm" and not self.judge.startswith("rule:"):
            raise ValueError(f"judge={self.judge!r}; expected 'llm' or 'rule:<reward name>'")
        if self.algo == "grpo" and self.max_completion_length >= self.max_length:
            raise ValueError(
                f"max_completion_length={self.max_completion_length} leaves no room for a "
                f"prompt in max_length={self.max_length}; raise max_length"
            )
        if self.overlong_buffer >= self.max_completion_length:
            raise ValueError(
                f"overlong_buffer={self.overlong_buffer} must be below "
                f"max_completion_length={self.max_completion_length}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain data (for manifests and YAML)."""
        return dataclasses.asdict(self)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Each field's help text, by name."""
        return {f.name: str(f.metadata.get("help", "")) for f in dataclasses.fields(cls)}


def recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file: a path as given, or the name of a bundled recipe (``tiny-dpo``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    bundled = RECIPES_DIR / f"{name}.yaml"
    if bundled.is_file():
        return bundled
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml") if not p.stem.startswith("accel"))
    raise FileNotFoundError(f"no recipe file {str(name_or_path)!r}; bundled recipes: {names}")


# The bundled recipe an online round uses when ONLINE_RECIPE names none, by served model:
# the trainer's plain defaults (100 steps at 2,048 tokens) would take hours on a CPU.
MODEL_RECIPES = {"smollm2": "smollm2-dpo", "tiny": "tiny-dpo"}


def recipe_for_model(model: str) -> str | None:
    """The bundled recipe tuned for ``model`` (an LLM_MODEL value), if there is one."""
    return MODEL_RECIPES.get(model.strip().lower())


def load_recipe(name_or_path: str | Path | None = None, **overrides: Any) -> Recipe:
    """Read a YAML recipe (unknown keys are an error), then apply ``overrides``."""
    data: dict[str, Any] = {}
    if name_or_path is not None:
        path = recipe_path(name_or_path)
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path} must hold a mapping of recipe fields")
        data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown recipe keys {unknown}; known keys: {sorted(known)}")
    return Recipe(**data)
