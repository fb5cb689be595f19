"""The trainer's steps wired to the store, the model server and the run directory.

Each ``rl-trainer`` command is one function here; ``run`` chains them: judge ->
build-data -> train -> publish (as a candidate, loaded into the server) -> gate ->
promote if it passed, otherwise reject. A run directory (``<DATA_DIR>/runs/<id>``)
keeps the data snapshot, metrics, TensorBoard logs, the trained adapter and the report,
and the adapter's manifest points back at all of it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from app.store.adapters import active_adapter, list_adapters
from app.store.db import Database, open_database
from app.store.loop import lock_alive, loop_phase, loop_state, new_signals, serving_versions
from app.store.models import AdapterStatus, AdapterVersion
from backend.client import ModelClient
from backend.errors import ModelServerError
from backend.models import local_model_path
from backend.settings import BackendSettings
from backend.settings import get_settings as backend_settings
from rl_trainer import publish as pub
from rl_trainer.config import Recipe
from rl_trainer.data import Snapshot, build_data, read_snapshot
from rl_trainer.gate import GateResult, gate, gate_text
from rl_trainer.judge import Judge, JudgeStats, judge_turns, make_judge, thumbs_agreement
from rl_trainer.settings import TrainerSettings
from rl_trainer.settings import get_settings as trainer_settings
from rl_trainer.train import FIT_FILE, TrainResult, train

logger = logging.getLogger(__name__)
T = TypeVar("T")
REPORT_FILE = "report.json"
# Metrics worth a line in the report (TRL's names); the JSONL file has all of them.
REPORT_METRICS = (
    "train_loss",
    "loss",
    "reward",
    "reward_std",
    "kl",
    "entropy",
    "rewards/margins",
    "rewards/accuracies",
    "completions/mean_length",
    "clip_ratio/region_mean",
    "train_runtime",
    "mean_step_s",
)


@dataclass
class Workspace:
    """The store, the model server and the settings one trainer process works with."""

    settings: TrainerSettings
    backend: BackendSettings
    db: Database
    client: ModelClient
    _judge_client: ModelClient | None = None

    @classmethod
    @contextmanager
    def open(cls) -> Iterator[Workspace]:
        """Open the store and a client of the model server; close both at the end."""
        settings, backend = trainer_settings(), backend_settings()
        db = open_database(settings.db_url)
        client = ModelClient(backend.base_url, api_key=backend.vllm_api_key or "")
        ws = cls(settings, backend, db, client)
        try:
            yield ws
        finally:
            client.close()
            if ws._judge_client is not None:
                ws._judge_client.close()
            db.close()

    @property
    def adapters_root(self) -> Path:
        """Where adapter versions are written (the server loads from the same place)."""
        return self.backend.adapters_root

    @property
    def name(self) -> str:
        """The adapter line's name."""
        return self.settings.adapter_name

    def base_model(self) -> str:
        """Path or hub id of the base model to train on (the served one by default).

        When the server fell back (an offline start serves SmolLM2 instead of the hub
        model), it lists the folder it actually serves: training follows it, since an
        adapter for another base could never be served.
        """
        if self.settings.train_base_model:
            return local_model_path(self.settings.train_base_model, self.backend)
        try:
            roots = [m.root for m in self.client.list_models() if m.parent is None]
        except ModelServerError:
            roots = []
        if roots and roots[0] and Path(roots[0]).is_dir():
            return roots[0]
        return local_model_path(self.backend.llm_model, self.backend)

    def served_base(self) -> str:
        """The base model's name as the server lists it."""
        bases = [m.id for m in self.client.list_models() if m.parent is None]
        return bases[0] if bases else self.backend.model_name

    def judge(self, recipe: Recipe) -> Judge:
        """The judge the recipe asks for."""
        if recipe.judge != "llm":
            return make_judge(recipe.judge, None, None)
        if self.settings.judge_url:
            # Its own key: the model server's VLLM_API_KEY must not go to another host.
            self._judge_client = self._judge_client or ModelClient(
                self.settings.judge_url, api_key=self.settings.judge_api_key or ""
            )
            client = self._judge_client
            model = self.settings.judge_model or next(
                m.id for m in client.list_models() if m.parent is None
            )
        else:
            client = self.client
            model = self.settings.judge_model or self.served_base()
        return make_judge("llm", client, model)

    def judge_is_policy(self, recipe: Recipe) -> bool:
        """Whether the LLM judge is the served base model grading its own kind of answers."""
        if recipe.judge != "llm":
            return False  # a rule is no model
        own = self.settings.judge_url
        if own and own.rstrip("/") != self.backend.base_url.rstrip("/"):
            return False
        model = self.settings.judge_model
        return not model or model == self.served_base()

    def new_run_dir(self, algo: str) -> Path:
        """A fresh run directory."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        path = self.settings.runs_dir / f"{stamp}-{algo}"
        path.mkdir(parents=True, exist_ok=False)
        return path

    def serving(self) -> str:
        """What new turns are answered by: the active adapter's served name or the base."""
        active = active_adapter(self.db)
        return active.served_name if active is not None else self.served_base()


def judge_step(ws: Workspace, recipe: Recipe, limit: int | None = None) -> JudgeStats:
    """Judge every stored answer not judged yet by this judge and rubric."""
    return judge_turns(ws.db, ws.judge(recipe), limit=limit, rated_limit=recipe.judge_rated_limit)


def build_data_step(
    ws: Workspace, recipe: Recipe, out: Path, stale: frozenset[str | None] = frozenset()
) -> Snapshot:
    """Snapshot the recipe's dataset into ``out`` (skipping turns of ``stale`` versions)."""
    dataset = None
    if recipe.dataset_path is not None:
        dataset = Path(recipe.dataset_path)
        if not dataset.is_absolute():
            dataset = ws.settings.datasets_dir / dataset
        if not dataset.is_file():
            raise FileNotFoundError(
                f"dataset {dataset} not found; set DATASETS_DIR or give an absolute dataset_path"
            )
    sampler = None
    try:
        judge: Judge | None = ws.judge(recipe)
    except ModelServerError as exc:
        if recipe.fresh_pairs:
            raise
        # Naming the default judge needs the server; without it, any judge's scores count.
        logger.warning("judge model unknown (%s); using judgments of every judge", exc)
        judge = None
    if recipe.algo == "dpo" and recipe.fresh_pairs and judge is not None:
        sampler = (ws.client, ws.serving(), judge)
    return build_data(
        ws.db,
        recipe,
        out,
        judge_model=judge.model if judge is not None else None,
        dataset_path=dataset,
        sampler=sampler,
        stale=stale,
    )


def train_step(ws: Workspace, recipe: Recipe, snapshot: Snapshot, run_dir: Path) -> TrainResult:
    """Train on ``snapshot``, from the active adapter when the recipe says so."""
    init = None
    if recipe.init == "active":
        active = active_adapter(ws.db)
        if active is not None:
            init = Path(active.path)
            logger.info("starting from the active adapter %s", active.served_name)
    judge = ws.judge(recipe) if "judge" in recipe.rewards and recipe.algo == "grpo" else None
    return train(recipe, snapshot, ws.base_model(), run_dir, init_adapter=init, judge=judge)


def _metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for k in REPORT_METRICS if metrics.get(k) is not None}


def publish_step(
    ws: Workspace,
    recipe: Recipe,
    adapter_dir: Path,
    *,
    snapshot: Snapshot | None = None,
    metrics: dict[str, Any] | None = None,
    run_dir: Path | None = None,
) -> AdapterVersion:
    """Write ``adapter_dir`` as the next version (a candidate) and load it into the server."""
    active = active_adapter(ws.db)
    manifest = {
        "algo": recipe.algo,
        "recipe": recipe.to_dict(),
        "parent": active.served_name if active is not None and recipe.init == "active" else None,
        "run_dir": str(run_dir) if run_dir else None,
        "data": {**snapshot.summary(), "path": str(snapshot.path)} if snapshot else None,
        "metrics": metrics or {},
    }
    fit = adapter_dir.parent / FIT_FILE  # written by train beside the adapter
    if fit.is_file():
        manifest["training_rows"] = json.loads(fit.read_text())
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    row = pub.publish(
        ws.db,
        adapter_dir,
        manifest,
        name=ws.name,
        adapters_root=ws.adapters_root,
        base_model=str(config.get("base_model_name_or_path") or ws.base_model()),
    )
    try:
        pub.ensure_loaded(ws.client, row)
        pub.check_answers(ws.client, row.served_name)
    except (ModelServerError, pub.PublishError) as exc:
        reject(ws, row, f"the model server could not serve it: {exc}")
        raise pub.PublishError(
            f"{row.served_name} was written but cannot be served: {exc}"
        ) from exc
    return row


def gate_step(ws: Workspace, recipe: Recipe, row: AdapterVersion) -> GateResult:
    """Gate ``row`` against what serves now on its snapshot's held-out slice."""
    data = (row.manifest.get("data") or {}).get("path")
    if not data:
        raise pub.PublishError(
            f"{row.served_name} has no data snapshot to take held-out turns from"
        )
    snapshot = read_snapshot(Path(data))
    pub.ensure_loaded(ws.client, row)
    judge = ws.judge(recipe)
    is_policy = ws.judge_is_policy(recipe)
    result = gate(
        ws.client,
        judge if recipe.gate_policy_judge or not is_policy else None,
        snapshot.heldout,
        candidate=row.served_name,
        baseline=ws.serving(),
        threshold=recipe.gate_threshold,
        max_tokens=recipe.gate_max_tokens,
        limit=recipe.gate_limit,
        judge_is_policy=is_policy,
        min_net_rows=recipe.gate_min_net_rows,
    )
    result.judge_thumbs = thumbs_agreement(ws.db, judge)
    pub.update_manifest(ws.db, row, gate=result.to_dict())
    return result


def reject(ws: Workspace, row: AdapterVersion, reason: str) -> None:
    """Mark a candidate rejected and free its slot in the server."""
    pub.set_status(ws.db, row, AdapterStatus.rejected)
    pub.update_manifest(ws.db, row, rejected_because=reason)
    try:
        ws.client.unload_adapter(row.served_name)
    except ModelServerError as exc:  # a failed unload only costs a slot; the rejection stands
        logger.warning("could not unload %s: %s", row.served_name, exc)


@dataclass
class Report:
    """What ``rl-trainer run`` did, stage by stage."""

    run_dir: str
    stages_s: dict[str, float] = field(default_factory=dict)
    judged: dict[str, int] = field(default_factory=dict)
    data: dict[str, int] = field(default_factory=dict)
    users: dict[str, float] = field(default_factory=dict)  # user id -> share of training rows
    training_rows: dict[str, Any] = field(default_factory=dict)  # kept/dropped (fit.json)
    metrics: dict[str, Any] = field(default_factory=dict)
    candidate: str | None = None
    gate: dict[str, Any] | None = None
    tripped: list[dict[str, Any]] = field(default_factory=list)  # training monitors
    promoted: bool = False
    canary: float | None = None  # the share of users the candidate serves on trial
    serving: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data (written to the run's report.json)."""
        return dict(vars(self))

    def text(self) -> str:
        """The report a person reads at the end of a run."""
        lines = [f"run: {self.run_dir}"]
        lines.append("stages: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.stages_s.items()))
        if self.judged:
            lines.append("judge: " + ", ".join(f"{k}={v}" for k, v in self.judged.items()))
        lines.append("data: " + ", ".join(f"{k}={v}" for k, v in sorted(self.data.items())))
        if self.users:
            shares = ", ".join(f"{user} {share:.0%}" for user, share in self.users.items())
            lines.append(f"users (share of training rows): {shares}")
        if self.training_rows:
            lines.append(rows_text(self.training_rows))
        if self.metrics:
            lines.append("training: " + ", ".join(f"{k}={v:.4g}" for k, v in self.metrics.items()))
        if self.gate is not None:
            lines.append(gate_text(self.gate))
        for trip in self.tripped:
            lines.append(f"monitor tripped: {trip.get('message')}")
        if self.canary is not None:
            lines.append(f"canary: {self.candidate} serves {self.canary:.0%} of users on trial")
        lines.append(f"promoted: {'yes' if self.promoted else 'no'}; serving now: {self.serving}")
        return "\n".join(lines)


def rows_text(rows: dict[str, Any]) -> str:
    """The line saying how many training rows were trained on, and why others were not."""
    line = (
        f"rows: trained on {rows['kept']} of {rows['given']} (max_length {rows['max_length']}, "
        f"{rows['shortened']} with sources shortened)"
    )
    if rows.get("dropped"):
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(rows["dropped"].items()))
        line += f"; dropped {rows['given'] - rows['kept']} ({reasons})"
    return line


def _timed(report: Report, stage: str, fn: Callable[[], T]) -> T:
    start = time.perf_counter()
    try:
        return fn()
    finally:
        report.stages_s[stage] = round(time.perf_counter() - start, 2)


def run(
    ws: Workspace,
    recipe: Recipe,
    *,
    skip_judge: bool = False,
    canary_share: float | None = None,
    stale: frozenset[str | None] = frozenset(),
) -> Report:
    """Run judge -> build-data -> train -> publish -> gate -> promote or reject; then report.

    With ``canary_share``, a candidate that passes the gate goes on canary trial for that
    share of users instead of being promoted (the online loop decides it later). A
    training monitor that trips stops training; nothing is published then.
    """
    run_dir = ws.new_run_dir(recipe.algo)
    (run_dir / "recipe.json").write_text(json.dumps(recipe.to_dict(), indent=2))
    report = Report(str(run_dir))
    if not skip_judge and recipe.dataset_path is None:
        stats = _timed(report, "judge", lambda: judge_step(ws, recipe))
        report.judged = dict(vars(stats))
    snapshot = _timed(
        report, "build_data", lambda: build_data_step(ws, recipe, run_dir / "data", stale)
    )
    report.data = dict(snapshot.counts)
    report.users = dict(snapshot.user_shares)
    try:
        result = _timed(report, "train", lambda: train_step(ws, recipe, snapshot, run_dir))
    finally:  # the counts matter most when nothing was left to train on
        if (run_dir / FIT_FILE).is_file():
            report.training_rows = json.loads((run_dir / FIT_FILE).read_text())
        _write_report(run_dir, report)
    report.metrics = _metrics(result.metrics)
    report.tripped = list(result.tripped)
    if report.tripped:
        report.serving = ws.serving()
        _write_report(run_dir, report)
        return report
    row = _timed(
        report,
        "publish",
        lambda: publish_step(
            ws,
            recipe,
            result.adapter_dir,
            snapshot=snapshot,
            metrics=result.metrics,
            run_dir=run_dir,
        ),
    )
    report.candidate = row.served_name
    try:
        verdict = _timed(report, "gate", lambda: gate_step(ws, recipe, row))
    except ModelServerError as exc:
        reject(ws, row, f"the gate could not run: {exc}")
        raise
    report.gate = verdict.to_dict()
    if verdict.passed and canary_share is not None:
        _timed(report, "canary", lambda: pub.start_canary(ws.db, ws.client, row, canary_share))
        report.canary = canary_share
    elif verdict.passed:
        _timed(report, "promote", lambda: pub.promote(ws.db, ws.client, row))
        report.promoted = True
    else:
        reject(ws, row, "; ".join(verdict.reasons))
    report.serving = ws.serving()
    _write_report(run_dir, report)
    return report


def _write_report(run_dir: Path, report: Report) -> None:
    (run_dir / REPORT_FILE).write_text(json.dumps(report.to_dict(), indent=2, default=str))


def _rows_summary(rows: dict[str, Any] | None) -> dict[str, Any] | None:
    if not rows:
        return None  # published before rows were counted, or from outside a run
    keys = ("given", "kept", "shortened", "dropped", "max_length")
    return {k: rows.get(k) for k in keys}


def status(ws: Workspace) -> dict[str, Any]:
    """Every version in the store, what serves, and what the server has loaded."""
    try:
        loaded = sorted(m.id for m in ws.client.list_models() if m.parent is not None)
        server: str | None = None
    except ModelServerError as exc:  # the status must show even when the server is down
        loaded, server = [], str(exc)
    versions = [
        {
            "served_name": v.served_name,
            "status": v.status.value,
            "created_at": v.created_at.isoformat(),
            "promoted_at": v.promoted_at.isoformat() if v.promoted_at else None,
            "algo": v.manifest.get("algo"),
            "gate_win_rate": (v.manifest.get("gate") or {}).get("win_rate"),
            "train_turns": len(
                ((v.manifest.get("data") or {}).get("turn_ids") or {}).get("train", [])
            ),
            "training_rows": _rows_summary(v.manifest.get("training_rows")),
            "loaded": v.served_name in loaded,
        }
        for v in list_adapters(ws.db)
    ]
    active = active_adapter(ws.db)
    return {
        "active": active.served_name if active is not None else None,
        "loop": loop_status(ws),
        "versions": versions,
        "server_loaded": loaded,
        "server_error": server,
    }


def loop_status(ws: Workspace) -> dict[str, Any]:
    """The online loop as ``rl-trainer status`` shows it."""
    state = loop_state(ws.db)
    _, canary = serving_versions(ws.db)
    alive = lock_alive(state)
    return {
        "state": loop_phase(state, canary is not None),
        "holder": state.holder if alive else None,
        "paused_reason": state.paused_reason,
        "last_round": {
            "status": state.round_status,
            "started_at": state.round_started_at.isoformat() if state.round_started_at else None,
            "message": state.round_message,
        },
        "new_signals": new_signals(ws.db, state.signals_since),
        "min_signals": ws.settings.online_min_signals,
        "next_round_at": state.next_round_at.isoformat() if state.next_round_at else None,
        "canary": canary.served_name if canary is not None else None,
    }
