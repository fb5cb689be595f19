"""Benchmark of the RL trainer: its train step against plain TRL, and a whole toy loop.

1. Step time and peak memory of ``rl_trainer.train.train`` (what ``rl-trainer train``
   runs) against a hand-written plain TRL script with the same model, data and settings
   (DPO and GRPO, tiny local model, CPU, one torch thread). Each run is its own process so
   peak RSS is its own; runs alternate plain/ours ``--rounds`` times and the median step
   time (first step excluded: warm-up) is reported. The overhead should be near 1.0x:
   the loops are TRL's, we only add a JSONL/TensorBoard callback.
2. End to end ``rl-trainer run --recipe tiny-dpo`` on a toy store (corrected answers that
   open with "[1]") against the embedded model server, split by stage.
3. With a GPU: DPO and GRPO steps on a randomly initialised model of
   Qwen2.5-1.5B-Instruct's shape (built from its config, no download): tokens/s and peak
   GPU memory.

With ``--family smollm2``, part 1 runs on the real SmolLM2-135M-Instruct instead, with the
``smollm2-dpo``/``smollm2-grpo`` recipes (their own thread counts, rewards and accumulation)
on real ClapNQ RAG rows; parts 2 and 3 are skipped.

Run: ``.venv/bin/python bench/trainer.py [--steps 8] [--rounds 2] [--skip-e2e]
[--family smollm2 [--algo grpo]]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SYSTEM = (
    "You are Flywheel, a helpful assistant that answers from the user's documents.\n"
    "Answer the question using only the numbered sources below. Cite every source you use "
    "with its number in square brackets, like [1] or [2][3].\n\nSources:\n[1] (facts)\n"
)
FACTS = [
    ("Water boils at 100 degrees Celsius at sea level.", "When does water boil?"),
    ("The capital of France is Paris.", "What is the capital of France?"),
    ("Rust is a programming language.", "What is Rust?"),
    ("Ice melts at 0 degrees Celsius.", "When does ice melt?"),
    ("The study found the treatment reduced the risk of disease.", "What did the study find?"),
    ("Berlin is the capital of Germany.", "Where is Berlin?"),
    ("Cells contain protein and genes.", "What do cells contain?"),
    ("2024 was a leap year.", "Which year was a leap year?"),
]


def rows(algo: str) -> list[dict[str, Any]]:
    out = []
    for fact, question in FACTS * 2:
        prompt = [
            {"role": "system", "content": SYSTEM + fact},
            {"role": "user", "content": question},
        ]
        if algo == "dpo":
            out.append(
                {
                    "prompt": prompt,
                    "chosen": [{"role": "assistant", "content": f"[1] {fact}"}],
                    "rejected": [{"role": "assistant", "content": "I am not sure about that."}],
                }
            )
        else:
            out.append({"prompt": prompt, "num_sources": 1, "answerable": True, "answer": None})
    return out


def clapnq_rows(algo: str, model: str, max_length: int, completion: int) -> list[dict[str, Any]]:
    """Real RAG rows from the shared ClapNQ dev set, as the agent's prompt numbers them.

    Each has the gold passage and two others; only rows that fit ``max_length`` whole
    (with ``completion`` tokens to generate) are kept, so neither side trims them. The
    reference is the correction, a decline the rejected answer.
    """
    from app.agent import prompts
    from app.eval.dataset import load_dataset
    from rl_trainer.train import load_tokenizer

    data = load_dataset(ROOT.parent / "shared" / "data" / "clapnq")
    texts = {d.document_id: (d.title, d.text) for d in data.documents}
    others = list(texts)
    tokenizer = load_tokenizer(model)
    out: list[dict[str, Any]] = []
    for n, item in enumerate(i for i in data.items if i.answerable and i.gold_documents):
        ids = [item.gold_documents[0], others[n % len(others)], others[(n * 7 + 3) % len(others)]]
        chunks: list[Any] = [{"title": texts[d][0], "text": texts[d][1]} for d in ids]
        prompt = [
            {"role": "system", "content": prompts.ANSWER_SYSTEM},
            {"role": "user", "content": prompts.user_message(item.question, chunks, [])},
        ]
        answer = f"{item.references[0]} [1]"
        chosen = [{"role": "assistant", "content": answer}]
        longest = prompt + chosen if algo == "dpo" else prompt  # the decline is shorter
        if len(tokenizer.apply_chat_template(longest, tokenize=True)) + completion > max_length:
            continue
        if algo == "dpo":
            rejected = [{"role": "assistant", "content": prompts.NOT_FOUND}]
            out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        else:
            out.append({"prompt": prompt, "num_sources": 3, "answerable": True, "answer": answer})
        if len(out) == 32:
            break
    return out


def bench_recipe(algo: str, steps: int, family: str = "tiny") -> Any:
    from rl_trainer.config import load_recipe

    return load_recipe(f"{family}-{algo}", init="fresh", max_steps=steps, logging_steps=1)


def bench_rows(recipe: Any, model: str, family: str) -> list[dict[str, Any]]:
    """The tiny fact rows, or real ClapNQ rows that fit the SmolLM2 recipe's max_length."""
    if family == "tiny":
        return rows(recipe.algo)
    completion = recipe.max_completion_length if recipe.algo == "grpo" else 0
    return clapnq_rows(recipe.algo, model, recipe.max_length, completion)


# --- worker processes -----------------------------------------------------------------


def worker_ours(algo: str, model: str, steps: int, out: Path, family: str) -> dict[str, Any]:
    from rl_trainer.data import Snapshot
    from rl_trainer.train import train

    recipe = bench_recipe(algo, steps, family)
    data = Snapshot(out / "data", algo, bench_rows(recipe, model, family), [])
    result = train(recipe, data, model, out / "run")
    return {"step_times": result.step_times}


def worker_plain(algo: str, model: str, steps: int, out: Path, family: str) -> dict[str, Any]:
    """The same training written directly against TRL + peft, as its docs show."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from rl_trainer.rewards import build_rewards

    recipe = bench_recipe(algo, steps, family)
    data = bench_rows(recipe, model, family)
    torch.set_num_threads(recipe.cpu_threads or torch.get_num_threads())
    times: list[float] = []

    class Timer(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - self.start)

    lora = LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    common = dict(
        output_dir=str(out / "plain"),
        max_steps=steps,
        learning_rate=recipe.learning_rate,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=recipe.seed,
        beta=recipe.beta,
        gradient_checkpointing=False,
    )
    if algo == "dpo":
        from trl import DPOConfig, DPOTrainer

        trainer: Any = DPOTrainer(
            model=model,
            args=DPOConfig(
                **common,
                loss_type=list(recipe.loss_type),
                loss_weights=recipe.loss_weights,
                max_length=recipe.max_length,
            ),
            train_dataset=Dataset.from_list(data),
            peft_config=lora,
            callbacks=[Timer()],
        )
    else:
        from trl import GRPOConfig, GRPOTrainer

        funcs, weights = build_rewards(
            recipe.rewards,
            max_completion_length=recipe.max_completion_length,
            overlong_buffer=recipe.overlong_buffer,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=list(funcs),  # type: ignore[arg-type]  # TRL list type is invariant
            args=GRPOConfig(
                **common,
                loss_type=str(recipe.loss_type),
                num_generations=recipe.num_generations,
                max_completion_length=recipe.max_completion_length,
                temperature=recipe.temperature,
                reward_weights=weights,
                shuffle_dataset=True,
            ),
            train_dataset=Dataset.from_list(data),
            peft_config=lora,
            callbacks=[Timer()],
        )
    trainer.train()
    trainer.save_model(str(out / "plain-adapter"))
    return {"step_times": times}


def run_worker(kind: str, algo: str, model: str, steps: int, family: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, __file__, "--worker", kind, "--algo", algo, "--model", model]
        cmd += ["--steps", str(steps), "--out", tmp, "--family", family]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if family == "tiny":  # SmolLM2 recipes choose their own threads (cpu_threads)
            env["OMP_NUM_THREADS"] = "1"
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, cwd=ROOT)
        return json.loads(result_file.read_text())


def worker_main(args: argparse.Namespace) -> None:
    import logging

    logging.disable(logging.WARNING)
    fn = worker_ours if args.worker == "ours" else worker_plain
    out = Path(args.out)
    result = fn(args.algo, args.model, args.steps, out, args.family)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    (out / "result.json").write_text(json.dumps(result))


# --- part 1: ours vs plain TRL ------------------------------------------------------


def compare(
    model: str,
    steps: int,
    rounds: int,
    family: str = "tiny",
    algos: tuple[str, ...] = ("dpo", "grpo"),
) -> None:
    what = (
        "tiny model, CPU, 1 thread"
        if family == "tiny"
        else "SmolLM2-135M, smollm2-* recipes, ClapNQ rows with 3 sources, CPU"
    )
    print(f"\n== train step: rl-trainer vs plain TRL ({what}, {steps} steps)")
    print(f"{'algo':<6}{'impl':<8}{'median step ms':>16}{'peak RSS MB':>14}")
    for algo in algos:
        found: dict[str, list[dict[str, Any]]] = {"plain": [], "ours": []}
        for _ in range(rounds):
            for kind in ("plain", "ours"):
                found[kind].append(run_worker(kind, algo, model, steps, family))
        summary = {}
        for kind, runs in found.items():
            steps_ms = [t * 1000 for r in runs for t in r["step_times"][1:]]
            summary[kind] = (statistics.median(steps_ms), max(r["peak_rss_mb"] for r in runs))
            print(f"{algo:<6}{kind:<8}{summary[kind][0]:>16.1f}{summary[kind][1]:>14.0f}")
        print(
            f"{algo:<6}{'ratio':<8}{summary['ours'][0] / summary['plain'][0]:>15.2f}x"
            f"{summary['ours'][1] / summary['plain'][1]:>13.2f}x   (ours / plain TRL)"
        )


# --- part 2: the toy loop end to end --------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_store(db_url: str, n: int) -> None:
    from app.agent import prompts
    from app.store import open_database
    from app.store.models import Feedback, Thread, Turn, User

    db = open_database(db_url)
    with db.session() as session:
        user = User(name="bench", api_key_hash="0" * 64)
        session.add(user)
        session.flush()
        for i in range(n):
            fact, question = FACTS[i % len(FACTS)]
            chunks = [{"chunk_id": f"c{i}", "title": "facts", "text": fact, "score": 0.9}]
            thread = Thread(user_id=user.id, title=question)
            session.add(thread)
            session.flush()
            turn = Turn(
                thread_id=thread.id,
                user_id=user.id,
                question=f"{question} ({i})",
                messages=[
                    {"role": "system", "content": prompts.ANSWER_SYSTEM},
                    {
                        "role": "user",
                        "content": prompts.user_message(f"{question} ({i})", chunks, []),  # type: ignore[arg-type]
                    },
                ],
                retrieved=chunks,
                answer="\n" * 12,
            )
            session.add(turn)
            session.flush()
            session.add(
                Feedback(
                    turn_id=turn.id, user_id=user.id, rating=-1, corrected_answer=f"[1] {fact}"
                )
            )
    db.close()


def end_to_end(model: str) -> None:
    print("\n== rl-trainer run --recipe tiny-dpo on a toy store (20 corrected turns), by stage")
    tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    adapters = tmp / "adapters"
    adapters.mkdir()
    port = free_port()
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "backend.server", "--model", model),
            *("--port", str(port), "--adapters-root", str(adapters)),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        import httpx

        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("model server did not start") from None
                time.sleep(0.5)
        seed_store(f"sqlite:///{tmp / 'flywheel.db'}", 20)
        env = {
            **os.environ,
            "DATA_DIR": str(tmp),
            "MODEL_SERVER_URL": f"http://127.0.0.1:{port}/v1",
            "ADAPTERS_DIR": str(adapters),
            "LLM_MODEL": model,
            "OMP_NUM_THREADS": "1",
        }
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "rl_trainer.cli", "run", "--recipe", "tiny-dpo"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        report = json.loads(next((tmp / "runs").glob("*/report.json")).read_text())
        stages = report["stages_s"]
        inside = sum(stages.values())
        for stage, seconds in stages.items():
            print(f"  {stage:<12}{seconds:>8.1f} s  {seconds / wall:>6.1%}")
        print(
            f"  {'startup':<12}{wall - inside:>8.1f} s  {(wall - inside) / wall:>6.1%}  (imports)"
        )
        print(f"  {'total':<12}{wall:>8.1f} s   promoted={report['promoted']}")
        print(f"  train stage / whole run: {stages['train'] / wall:.2f}x")
        print("  " + done.stdout.strip().replace("\n", "\n  "))
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


# --- part 3: GPU, the default model's real shape --------------------------------------


def gpu_real_shape(steps: int, tiny_model: str) -> None:
    import torch

    if not torch.cuda.is_available():
        print("\n== GPU: none here; skipped (DPO/GRPO on Qwen2.5-1.5B's shape need CUDA)")
        return
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from rl_trainer.data import Snapshot
    from rl_trainer.train import train

    print("\n== GPU: random Qwen2.5-1.5B-shaped model (bf16, LoRA r=16)")
    # Qwen/Qwen2.5-1.5B-Instruct's config.json, typed in: no download.
    config = Qwen2Config(
        vocab_size=151936,
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    )
    path = Path(tempfile.mkdtemp(prefix="qwen-shape-"))
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(path)  # ids fit the vocabulary
    for algo in ("dpo", "grpo"):
        from rl_trainer.config import load_recipe

        recipe = load_recipe(
            f"qwen2.5-1.5b-{algo}",
            init="fresh",
            max_steps=steps,
            judge="rule:leading_citation",
            rewards={"leading_citation": 1.0, "soft_overlong": 0.2} if algo == "grpo" else None,
            max_completion_length=128 if algo == "grpo" else None,
            overlong_buffer=32 if algo == "grpo" else None,
        )
        torch.cuda.reset_peak_memory_stats()
        out = Path(tempfile.mkdtemp())
        result = train(recipe, Snapshot(out / "d", algo, rows(algo) * 8, []), str(path), out)
        logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        tokens = max(m.get("num_tokens", 0) for m in logged)
        seconds = sum(result.step_times)
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(
            f"  {algo}: {seconds / len(result.step_times):.2f} s/step, "
            f"{tokens / seconds:,.0f} tokens/s, peak {peak:.1f} GiB"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--skip-e2e", action="store_true")
    p.add_argument("--worker", choices=["ours", "plain"])
    p.add_argument("--algo", choices=["dpo", "grpo"], help="with --family smollm2: only this")
    p.add_argument("--model")
    p.add_argument(
        "--family",
        choices=["tiny", "smollm2"],
        default="tiny",
        help="smollm2: the step comparison on the real SmolLM2 with its recipes and real "
        "ClapNQ rows (the toy loop and GPU parts are skipped)",
    )
    p.add_argument("--out")
    args = p.parse_args()
    if args.worker:
        worker_main(args)
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.family == "smollm2":
        from backend.models import local_model_path
        from backend.settings import BackendSettings
        from backend.smollm2 import SMOLLM2_MODEL

        path = local_model_path(SMOLLM2_MODEL, BackendSettings())
        algos = (args.algo,) if args.algo else ("dpo", "grpo")
        compare(path, args.steps, args.rounds, "smollm2", algos)
        return
    from backend.tiny import ensure

    model = str(ensure(Path(tempfile.gettempdir()) / "flywheel-bench-models", "chat"))
    compare(model, args.steps, args.rounds)
    if not args.skip_e2e:
        end_to_end(model)
    gpu_real_shape(args.steps, model)


if __name__ == "__main__":
    main()
