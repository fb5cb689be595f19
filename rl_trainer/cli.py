"""``rl-trainer``: judge, build-data, train, gate, publish, promote, rollback, run, status.

Thin on purpose: parse, open the workspace, call one function of
:mod:`rl_trainer.pipeline`, write its result to stdout (logs and progress go to
stderr). Recipes are bundled names (``tiny-dpo``) or YAML paths; ``--set key=value``
overrides one recipe field for this invocation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import yaml

from backend.errors import ModelServerError
from rl_trainer.config import Recipe, load_recipe, recipe_for_model
from rl_trainer.publish import PublishError

logger = logging.getLogger("rl_trainer")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value`` pairs as recipe fields, values read as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--set {pair!r}: expected key=value")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):
            # YAML 1.1 reads "2e-4" (no dot) as a string; a number was meant.
            with contextlib.suppress(ValueError):
                parsed = float(parsed)
        out[key.strip()] = parsed
    return out


def _recipe(args: argparse.Namespace) -> Recipe:
    return load_recipe(args.recipe, algo=getattr(args, "algo", None), **parse_overrides(args.set))


def _writer(stream: TextIO) -> Callable[[str], None]:
    def write(text: str) -> None:
        stream.write(text.rstrip("\n") + "\n")
        stream.flush()

    return write


def _rows(rows: dict[str, Any] | None) -> str:
    """``trained=12/14 dropped={...}`` for a status line."""
    if not rows:
        return "trained=?"
    dropped = ", ".join(f"{k}: {n}" for k, n in sorted((rows.get("dropped") or {}).items()))
    return f"trained={rows['kept']}/{rows['given']} dropped={{{dropped}}}"


def _stop_on_signals(stop: Any) -> None:
    """SIGTERM/SIGINT end the online loop after its current step (compose stops with TERM)."""
    import signal

    def handler(signum: int, _frame: Any) -> None:
        logger.info("signal %d: the online loop stops after its current step", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _loop_line(loop: dict[str, Any]) -> str:
    """``online loop: waiting (holder ...); last round ...; next round ...``."""
    parts = [f"online loop: {loop['state']}"]
    if loop.get("paused_reason"):
        parts.append(f"paused: {loop['paused_reason']}")
    last = loop.get("last_round") or {}
    if last.get("status"):
        parts.append(
            f"last round {last['status']} (started {last.get('started_at')}): {last.get('message')}"
        )
    parts.append(
        f"next round: at {loop['min_signals']} new signals ({loop['new_signals']} now)"
        f" or at {loop.get('next_round_at') or '-'}"
    )
    if loop.get("canary"):
        parts.append(f"canary: {loop['canary']}")
    return "; ".join(parts)


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="rl-trainer",
        description="Train LoRA adapters from Flywheel's logged turns, gate them, and serve them.",
    )
    p.add_argument("--log-level", default="INFO")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, help_text: str, *, recipe: bool = True, algo: bool = False) -> Any:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        if recipe:
            cmd.add_argument("--recipe", help="bundled recipe name or YAML path")
            cmd.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a recipe field",
            )
        if algo:
            cmd.add_argument("--algo", choices=["dpo", "grpo"], help="overrides the recipe's")
        return cmd

    cmd = add("judge", "score stored turns that have no judgment yet")
    cmd.add_argument("--limit", type=int, default=None)
    cmd = add("build-data", "snapshot training data and a held-out slice", algo=True)
    cmd.add_argument("--out", type=Path, help="directory (default: a new run directory)")
    cmd = add("train", "train a LoRA adapter with TRL", algo=True)
    cmd.add_argument("--data", type=Path, help="snapshot from build-data (default: build one)")
    cmd.add_argument("--out", type=Path, help="run directory (default: a new one)")
    cmd = add("publish", "write a trained adapter as the next version and load it")
    cmd.add_argument("adapter", type=Path, help="adapter directory (a run's adapter/)")
    cmd.add_argument("--data", type=Path, help="its data snapshot (for the gate and manifest)")
    cmd = add("gate", "compare a published candidate with what serves now")
    cmd.add_argument("candidate", help="version: 3, v3 or flywheel-v3")
    cmd = add("promote", "serve a version for new turns", recipe=False)
    cmd.add_argument("version", help="version: 3, v3 or flywheel-v3")
    cmd.add_argument(
        "--force", action="store_true", help="promote even a version the gate rejected"
    )
    add("rollback", "switch back to the previously active version", recipe=False)
    cmd = add("run", "judge, build-data, train, publish, gate, then promote or reject", algo=True)
    cmd.add_argument("--skip-judge", action="store_true", help="use existing judgments only")
    cmd = add("online", "train, gate and canary by itself as signals arrive (runs until stopped)")
    cmd.add_argument("--max-rounds", type=int, default=None, help="stop after this many rounds")
    cmd.add_argument("--once", action="store_true", help="look at the store once, then stop")
    cmd = add("status", "adapter versions, what serves, what the server has loaded", recipe=False)
    cmd.add_argument("--json", action="store_true")
    return p


def dispatch(args: argparse.Namespace, write: Callable[[str], None]) -> int:
    """Run one command; returns the exit status."""
    from rl_trainer import pipeline
    from rl_trainer import publish as pub
    from rl_trainer.data import read_snapshot
    from rl_trainer.gate import gate_text

    with pipeline.Workspace.open() as ws:
        if args.command == "judge":
            stats = pipeline.judge_step(ws, _recipe(args), args.limit)
            write(json.dumps(vars(stats)))
        elif args.command == "build-data":
            recipe = _recipe(args)
            out = args.out or ws.new_run_dir(recipe.algo) / "data"
            snapshot = pipeline.build_data_step(ws, recipe, out)
            write(json.dumps({"path": str(snapshot.path), **snapshot.counts}))
        elif args.command == "train":
            recipe = _recipe(args)
            run_dir = args.out or ws.new_run_dir(recipe.algo)
            snapshot = (
                read_snapshot(args.data)
                if args.data
                else pipeline.build_data_step(ws, recipe, run_dir / "data")
            )
            result = pipeline.train_step(ws, recipe, snapshot, run_dir)
            fit = result.fit.to_dict() if result.fit else None
            write(
                json.dumps(
                    {"adapter": str(result.adapter_dir), "data": str(snapshot.path), "rows": fit}
                )
            )
        elif args.command == "publish":
            recipe = _recipe(args)
            given = read_snapshot(args.data) if args.data else None
            row = pipeline.publish_step(ws, recipe, args.adapter, snapshot=given)
            write(row.served_name)
        elif args.command == "gate":
            row = pub.get_version(ws.db, ws.name, args.candidate)
            verdict = pipeline.gate_step(ws, _recipe(args), row)
            logger.info("%s", gate_text(verdict.to_dict()))  # for people; stdout is for scripts
            write(json.dumps(verdict.to_dict(), indent=2))
            return 0 if verdict.passed else 2
        elif args.command == "promote":
            row = pub.get_version(ws.db, ws.name, args.version)
            pub.promote(ws.db, ws.client, row, force=args.force)
            write(f"serving {row.served_name}")
        elif args.command == "rollback":
            previous = pub.rollback(ws.db, ws.client, ws.name)
            write(f"serving {previous.served_name if previous else 'the base model'}")
        elif args.command == "run":
            report = pipeline.run(ws, _recipe(args), skip_judge=args.skip_judge)
            write(report.text())
        elif args.command == "online":
            from rl_trainer.online import LoopBusy, OnlineLoop

            name = (
                args.recipe or ws.settings.online_recipe or recipe_for_model(ws.backend.llm_model)
            )
            recipe = load_recipe(name, **parse_overrides(args.set))
            logger.info("online rounds use recipe %s", name or "(the trainer's defaults)")
            loop = OnlineLoop(ws, recipe)
            _stop_on_signals(loop.stop)
            try:
                loop.run(max_rounds=0 if args.once else args.max_rounds)
            except LoopBusy as exc:
                logger.error("online: %s", exc)
                return 1
            write(f"online loop stopped after {loop.rounds} rounds")
        elif args.command == "status":
            state = pipeline.status(ws)
            if args.json:
                write(json.dumps(state, indent=2))
            else:
                write(f"active: {state['active'] or 'none (base model)'}")
                for v in state["versions"]:
                    write(
                        f"{v['served_name']:<24} {v['status']:<10} algo={v['algo']} "
                        f"win_rate={v['gate_win_rate']} train_turns={v['train_turns']} "
                        f"{_rows(v['training_rows'])} loaded={v['loaded']}"
                    )
                write(_loop_line(state["loop"]))
                if state["server_error"]:
                    write(f"model server: {state['server_error']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rl-trainer`` console script."""
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    # The result goes to stdout; anything else printed while working (transformers echoes
    # training logs to stdout) goes to stderr, so scripts reading the output get the result.
    write = _writer(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return dispatch(args, write)
    except (PublishError, ValueError, FileNotFoundError, ModelServerError) as exc:
        logger.error("%s: %s", args.command, exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
