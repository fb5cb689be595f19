"""Training a LoRA adapter with TRL's DPOTrainer or GRPOTrainer.

This module only turns a recipe and a data snapshot into TRL's configs and trainer;
the training loops are TRL's, so what is known about them (and their speed) holds
here. The base model is never modified: LoRA weights are trained on top of it, starting
fresh or from the active adapter, and with peft the reference model for the KL term is
the base with the adapter disabled, so no second copy of the model is loaded. Metrics go
to TensorBoard and a JSONL file in the run directory; TRL's progress bar shows on the
console.

Monitors (:mod:`rl_trainer.kl_control`) watch the logged KL and completion length and
stop the run when one crosses its limit; the result's ``tripped`` and ``monitors.json``
say which, so the caller can refuse to publish. An adaptive KL coefficient is on when
the recipe sets ``kl_target``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rl_trainer.config import Recipe
from rl_trainer.data import DataError, Snapshot
from rl_trainer.fit import FitReport, fit_rows, nothing_left
from rl_trainer.monitors import MonitorLimits
from rl_trainer.rewards import build_rewards

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
FIT_FILE = "fit.json"  # what fitting to max_length kept and dropped (beside adapter/)
MONITORS_FILE = "monitors.json"  # the training monitors' limits and trips
DPO_COLUMNS = ("prompt", "chosen", "rejected")
GRPO_COLUMNS = ("prompt", "num_sources", "answerable", "answer")


@dataclass
class TrainResult:
    """A trained adapter directory and what training reported."""

    adapter_dir: Path
    base_model: str
    metrics: dict[str, Any] = field(default_factory=dict)
    step_times: list[float] = field(default_factory=list)
    model: Any = None  # the trained peft model, still in memory
    fit: FitReport | None = None  # the rows trained on, counted
    # Monitors that stopped training (Trip.to_dict()); empty when it ran to max_steps.
    # An adapter trained until a monitor tripped is saved but should not be published.
    tripped: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(recipe: Recipe) -> str:
    """``cuda`` or ``cpu``: the recipe's choice, or whichever is present."""
    if recipe.device != "auto":
        return recipe.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _callbacks(run_dir: Path, step_times: list[float]) -> tuple[list[Any], Any]:
    from torch.utils.tensorboard import SummaryWriter
    from transformers import TrainerCallback
    from transformers.integrations import TensorBoardCallback

    metrics_path = run_dir / METRICS_FILE

    class JsonlMetrics(TrainerCallback):  # type: ignore[misc]
        """Appends every logged dict, with its step, to the run's metrics file."""

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
            if logs:
                with metrics_path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    class StepTimer(TrainerCallback):  # type: ignore[misc]
        """Wall time of each optimizer step (for the report and the benchmark)."""

        def on_step_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
            step_times.append(time.perf_counter() - self.start)

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
    return [JsonlMetrics(), StepTimer(), TensorBoardCallback(tb_writer=writer)], writer


def training_limits(recipe: Recipe) -> MonitorLimits:
    """The training monitors' limits from the recipe (0 or None turns one off)."""
    return MonitorLimits(
        max_kl=recipe.monitor_max_kl or None,
        max_length_drift=recipe.monitor_max_length_drift or None,
    )


def common_args(recipe: Recipe, run_dir: Path, device: str) -> dict[str, Any]:
    """Arguments DPOConfig and GRPOConfig share (transformers' TrainingArguments)."""
    on_gpu = device == "cuda"
    return {
        "output_dir": str(run_dir / "trainer"),
        "max_steps": recipe.max_steps,
        "learning_rate": recipe.learning_rate,
        "per_device_train_batch_size": recipe.per_device_train_batch_size,
        "gradient_accumulation_steps": recipe.gradient_accumulation_steps,
        "warmup_steps": recipe.warmup_steps,
        "lr_scheduler_type": recipe.lr_scheduler_type,
        "logging_steps": recipe.logging_steps,
        "save_strategy": "no",
        "report_to": "none",  # TensorBoard is attached as a callback writing into the run dir
        "seed": recipe.seed,
        "data_seed": recipe.seed,
        "use_cpu": not on_gpu,
        "bf16": on_gpu,
        "dataloader_num_workers": 0,
        "beta": recipe.beta,
        # Always passed: TRL turns it on by default, which slows small models for nothing.
        "gradient_checkpointing": recipe.gradient_checkpointing,
    }


def load_tokenizer(base_model: str) -> Any:
    """The policy's tokenizer, with a pad token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_policy(base_model: str, device: str, init_adapter: Path | None) -> tuple[Any, Any]:
    """The base model (with the starting adapter, trainable, when given) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    tokenizer = load_tokenizer(base_model)
    if init_adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(init_adapter), is_trainable=True)
    return model, tokenizer


def lora_config(recipe: Recipe) -> Any:
    """The peft LoRA config of a fresh adapter."""
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.lora_target_modules),
        task_type="CAUSAL_LM",
    )


def make_trainer(
    recipe: Recipe,
    rows: list[dict[str, Any]],
    base_model: str,
    run_dir: Path,
    *,
    init_adapter: Path | None = None,
    judge: Any = None,
    extra_rewards: dict[str, Any] | None = None,
    callbacks: list[Any] | None = None,
) -> Any:
    """TRL's trainer for the recipe's algorithm, on ``rows`` (a snapshot's train split)."""
    from datasets import Dataset

    device = resolve_device(recipe)
    if device == "cpu" and recipe.cpu_threads:
        import torch

        torch.set_num_threads(recipe.cpu_threads)
    model, tokenizer = load_policy(base_model, device, init_adapter)
    peft_config = None if init_adapter is not None else lora_config(recipe)
    args = common_args(recipe, run_dir, device)
    if recipe.algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        dataset = Dataset.from_list([{k: r[k] for k in DPO_COLUMNS} for r in rows])
        losses = [recipe.loss_type] if isinstance(recipe.loss_type, str) else recipe.loss_type
        dpo_config = DPOConfig(
            **args,
            loss_type=list(losses),
            loss_weights=recipe.loss_weights,
            max_length=recipe.max_length,
        )
        return DPOTrainer(
            model=model,
            args=dpo_config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    from trl import GRPOConfig, GRPOTrainer

    funcs, weights = build_rewards(
        recipe.rewards,
        judge=judge,
        max_completion_length=recipe.max_completion_length,
        overlong_buffer=recipe.overlong_buffer,
        extra=extra_rewards,
    )
    dataset = Dataset.from_list([{k: r.get(k) for k in GRPO_COLUMNS} for r in rows])
    grpo_config = GRPOConfig(
        **args,
        loss_type=str(recipe.loss_type),
        num_generations=recipe.num_generations,
        max_completion_length=recipe.max_completion_length,
        temperature=recipe.temperature,
        reward_weights=weights,
        use_vllm=recipe.use_vllm,
        vllm_mode="colocate",
        shuffle_dataset=True,
    )
    return GRPOTrainer(
        model=model,
        reward_funcs=list(funcs),  # type: ignore[arg-type]  # TRL's list type is invariant
        args=grpo_config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks,
    )


def fit_snapshot(
    recipe: Recipe, rows: list[dict[str, Any]], base_model: str, run_dir: Path
) -> tuple[list[dict[str, Any]], FitReport]:
    """The training rows that fit ``recipe.max_length``, counted into ``run_dir/fit.json``.

    Raises:
        DataError: when no row fits, with the max_length that would make one fit.
    """
    unit = "pairs" if recipe.algo == "dpo" else "prompts"
    completion = recipe.max_completion_length if recipe.algo == "grpo" else 0
    fitted, report = fit_rows(
        rows,
        load_tokenizer(base_model),
        algo=recipe.algo,
        max_length=recipe.max_length,
        completion_tokens=completion,
    )
    (run_dir / FIT_FILE).write_text(json.dumps(report.to_dict(), indent=2))
    logger.info("%s", report.text(unit))
    if not fitted:
        raise DataError(nothing_left(report, unit, base_model))
    return fitted, report


def train(
    recipe: Recipe,
    snapshot: Snapshot,
    base_model: str,
    run_dir: Path,
    *,
    init_adapter: Path | None = None,
    judge: Any = None,
    extra_rewards: dict[str, Any] | None = None,
) -> TrainResult:
    """Train on ``snapshot`` and save the adapter to ``run_dir/adapter``.

    Rows are first fitted to ``recipe.max_length`` (:mod:`rl_trainer.fit`), so TRL never
    drops one silently; what was kept and dropped is in ``result.fit`` and ``fit.json``.

    A monitor crossing its limit stops training early; the adapter is still saved and
    ``result.tripped`` (and ``run_dir/monitors.json``) says which monitor and why.

    Raises:
        ValueError: when the snapshot has no training rows, none fits ``max_length``
            (:class:`DataError`), or it is for another algorithm.
    """
    if snapshot.algo != recipe.algo:
        raise ValueError(
            f"the data snapshot at {snapshot.path} is for {snapshot.algo}, the recipe trains "
            f"{recipe.algo}; run build-data --algo {recipe.algo}"
        )
    if not snapshot.train:
        raise ValueError(
            f"no training rows in {snapshot.path} ({snapshot.counts}); collect more ratings, "
            "corrections or judgments first"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    rows, fit = fit_snapshot(recipe, snapshot.train, base_model, run_dir)
    from rl_trainer.kl_control import AdaptiveKL, TrainingMonitor

    step_times: list[float] = []
    callbacks, writer = _callbacks(run_dir, step_times)
    limits = training_limits(recipe)
    monitor = TrainingMonitor(limits)
    adaptive = None
    if recipe.kl_target is not None:
        adaptive = AdaptiveKL(recipe.kl_target, recipe.kl_horizon)
        callbacks.insert(0, adaptive)  # before the metrics callbacks: they log its new beta
    callbacks.insert(0, monitor)
    trainer = make_trainer(
        recipe,
        rows,
        base_model,
        run_dir,
        init_adapter=init_adapter,
        judge=judge,
        extra_rewards=extra_rewards,
        callbacks=callbacks,
    )
    if adaptive is not None:
        adaptive.bind(trainer)
    logger.info(
        "training %s on %d rows for %d steps (%s)",
        recipe.algo,
        len(rows),
        recipe.max_steps,
        resolve_device(recipe),
    )
    try:
        output = trainer.train()
    finally:
        writer.close()
    adapter_dir = run_dir / "adapter"
    trainer.save_model(str(adapter_dir))  # the peft adapter only; main process under DDP
    steps = [h for h in trainer.state.log_history if "loss" in h]
    metrics = {**(steps[-1] if steps else {}), **output.metrics}  # last step's, then totals
    metrics["mean_step_s"] = sum(step_times) / len(step_times) if step_times else None
    if adaptive is not None:
        metrics["kl_beta"] = trainer.beta  # where adaptive KL left the coefficient
    tripped = [trip.to_dict() for trip in monitor.trips]
    record = {
        "limits": {"max_kl": limits.max_kl, "max_length_drift": limits.max_length_drift},
        "baseline_length": monitor.baseline_length,
        "stopped_at_step": trainer.state.global_step if tripped else None,
        "trips": tripped,
    }
    (run_dir / MONITORS_FILE).write_text(json.dumps(record, indent=2))
    if tripped:
        logger.warning(
            "training stopped at step %d of %d by %s",
            trainer.state.global_step,
            recipe.max_steps,
            ", ".join(t["monitor"] for t in tripped),
        )
    return TrainResult(
        adapter_dir, base_model, metrics, step_times, trainer.model, fit, tripped=tripped
    )
