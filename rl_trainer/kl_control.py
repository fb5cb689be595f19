"""Training-time controls: monitors that stop a run, and an adaptive KL coefficient.

Both are transformers callbacks reading what TRL logs, so they see the same numbers
as the metrics file and need no hooks into TRL's loops. GRPO logs ``kl`` (when
beta > 0) and ``completions/mean_length`` (tokens); DPO logs neither, so on DPO the
monitor watches nothing and says so. Stopping sets ``should_training_stop``: the
trainer finishes the current step and returns normally, so the caller still saves the
adapter and sees the trips, and decides not to publish it.

:class:`AdaptiveKL` follows veRL's (and OpenRLHF's) ``AdaptiveKLController``: the KL
coefficient grows while the measured KL is above the target and shrinks while below,
by at most 20% of the error per ``horizon`` samples. TRL's GRPOTrainer reads
``self.beta`` in every loss computation, so setting it between steps takes effect on
the next one.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback

from rl_trainer.monitors import MonitorLimits, Trip

logger = logging.getLogger(__name__)

KL_KEY = "kl"  # TRL GRPOTrainer: mean per-token KL to the reference, logged when beta > 0
LENGTH_KEY = "completions/mean_length"  # TRL GRPOTrainer: mean completion length, tokens
BETA_KEY = "kl_beta"  # what AdaptiveKL adds to the logs: the coefficient after its update
# veRL clips the proportional error to +-20% so one noisy KL reading cannot swing beta.
MAX_ERROR = 0.2
# Below this multiplier per update beta would collapse towards 0, where TRL stops
# computing reference log-probs; only reached when horizon < 2.5x the samples per update.
MIN_MULTIPLIER = 0.5


class TrainingMonitor(TrainerCallback):  # type: ignore[misc]
    """Stops training when KL or completion length crosses its limit; ``trips`` says why.

    Length drift is measured from ``baseline_length`` when given, else from the first
    logged mean completion length.
    """

    def __init__(self, limits: MonitorLimits, baseline_length: float | None = None) -> None:
        self.limits = limits
        self.baseline_length = baseline_length
        self.trips: list[Trip] = []
        self.seen: set[str] = set()  # which of the watched keys TRL logged at all

    def _trip(self, trip: Trip, control: Any) -> None:
        logger.warning("monitor tripped at step %s, stopping training: %s", trip.step, trip.message)
        self.trips.append(trip)
        control.should_training_stop = True

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        """Check the logged KL and completion length against the limits."""
        logs = logs or {}
        step = state.global_step
        kl, length = logs.get(KL_KEY), logs.get(LENGTH_KEY)
        self.seen.update(k for k, v in ((KL_KEY, kl), (LENGTH_KEY, length)) if v is not None)
        max_kl = self.limits.max_kl
        if max_kl is not None and kl is not None and kl > max_kl:
            message = f"KL to the reference reached {kl:.3f} nats/token (limit {max_kl})"
            self._trip(Trip("kl", kl, max_kl, message, step), control)
        max_drift = self.limits.max_length_drift
        if length is None:
            return
        if self.baseline_length is None:
            self.baseline_length = length
            return
        if max_drift is None or self.baseline_length <= 0:
            return
        drift = (length - self.baseline_length) / self.baseline_length
        if abs(drift) > max_drift:
            message = (
                f"mean_length drifted {drift:+.0%} from the start of training "
                f"({length:.1f} vs {self.baseline_length:.1f} tokens; limit {max_drift:.0%})"
            )
            self._trip(Trip("mean_length", drift, max_drift, message, step), control)

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        """Say when TRL logged nothing to watch (DPO; GRPO with beta 0 has no KL)."""
        if not self.seen:
            logger.info("training monitors saw no KL or completion length in TRL's logs")


def adaptive_beta(beta: float, kl: float, target: float, n_steps: int, horizon: int) -> float:
    """VeRL's update: ``beta * (1 + clip(kl / target - 1, +-0.2) * n_steps / horizon)``.

    ``n_steps`` is the number of samples (completions) trained since the last update.
    """
    error = min(max(kl / target - 1.0, -MAX_ERROR), MAX_ERROR)
    return beta * max(1.0 + error * n_steps / horizon, MIN_MULTIPLIER)


class AdaptiveKL(TrainerCallback):  # type: ignore[misc]
    """Moves a GRPO trainer's ``beta`` towards ``target`` KL after each logged KL.

    ``trainer`` may be bound later with :meth:`bind`: callbacks are given to the trainer
    when it is built, and one placed before the metrics callbacks puts its new beta
    (``kl_beta``) into the same logged line.

    Raises:
        ValueError: for a target or horizon that is not positive, or a trainer whose
            beta is 0 (TRL then loads no reference and computes no KL to adapt).
    """

    def __init__(self, target: float, horizon: int, trainer: Any = None) -> None:
        if target <= 0:
            raise ValueError(f"kl_target={target} must be above 0 (nats per token)")
        if horizon < 1:
            raise ValueError(f"kl_horizon={horizon} must be at least 1 (samples)")
        self.target = target
        self.horizon = horizon
        self.trainer: Any = None
        self.last_step = 0
        self.history: list[tuple[int, float, float]] = []  # (step, logged kl, new beta)
        if trainer is not None:
            self.bind(trainer)

    def bind(self, trainer: Any) -> None:
        """Adapt ``trainer.beta`` from now on."""
        if not trainer.beta > 0:
            raise ValueError(
                f"adaptive KL needs an initial beta above 0 (got beta={trainer.beta}): with "
                "beta 0 TRL computes no KL to the reference; set beta (e.g. 0.04) in the recipe"
            )
        self.trainer = trainer

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **_: Any) -> None:
        """Update the trainer's beta from the KL logged for the steps since the last log."""
        kl = (logs or {}).get(KL_KEY)
        if kl is None or self.trainer is None:
            return
        per_step = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        )
        n_steps = (state.global_step - self.last_step) * per_step
        self.last_step = state.global_step
        beta = adaptive_beta(self.trainer.beta, kl, self.target, n_steps, self.horizon)
        self.trainer.beta = beta
        self.history.append((state.global_step, kl, beta))
        logs[BETA_KEY] = beta
        logger.debug(
            "step %d: kl %.4f (target %.4f), beta -> %.5f", state.global_step, kl, self.target, beta
        )
