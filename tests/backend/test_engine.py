"""The generation engine in-process: batching that joins running batches, detokenization."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.engine import Engine, GenerationRequest
from backend.models import load_model
from backend.sampling import IncrementalDetokenizer, SamplingParams
from tests.conftest import wait_until


@pytest.fixture(scope="module")
def engine(tiny_chat_model: Path) -> Iterator[Engine]:
    eng = Engine(load_model(str(tiny_chat_model), "tiny", "cpu", "float32"), batch_window_s=0)
    eng.start()
    yield eng
    eng.stop()


async def _collect(
    engine: Engine, prompt: list[int], max_tokens: int, after: asyncio.Event | None = None
) -> list[int]:
    req = engine.submit(
        prompt, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
    )
    tokens: list[int] = []
    async for deltas in engine.results(req):
        for d in deltas:
            tokens += d.token_ids
        if after is not None and len(tokens) >= 5:
            after.set()
    return tokens


def test_a_request_joins_a_running_batch_and_gets_its_solo_output(engine: Engine) -> None:
    long_prompt = engine.encode_chat([{"role": "user", "content": "Tell me about Paris, France."}])
    short_prompt = engine.encode_chat([{"role": "user", "content": "Hi"}])

    async def solo() -> tuple[list[int], list[int]]:
        return await _collect(engine, long_prompt, 40), await _collect(engine, short_prompt, 20)

    expected_long, expected_short = asyncio.run(solo())
    engine.stats["max_batch_rows"] = 0
    passes_before = engine.stats["forward_passes"]

    async def staggered() -> tuple[list[int], list[int]]:
        running = asyncio.Event()
        first = asyncio.create_task(_collect(engine, long_prompt, 40, after=running))
        await running.wait()
        second = await _collect(engine, short_prompt, 20)
        return await first, second

    got_long, got_short = asyncio.run(staggered())
    assert got_long == expected_long
    assert got_short == expected_short
    assert engine.stats["max_batch_rows"] == 2, "the second request should join the first's batch"
    # joined: fewer passes than running the two one after the other
    assert engine.stats["forward_passes"] - passes_before < 40 + 20


def test_cancelled_request_stops_generating(engine: Engine) -> None:
    prompt = engine.encode_text("The quick brown fox")

    async def run() -> tuple[GenerationRequest, int]:
        req = engine.submit(prompt, SamplingParams(max_tokens=3000, temperature=0, ignore_eos=True))
        seen = 0
        results = engine.results(req)
        async for deltas in results:
            seen += len(deltas)
            if seen >= 3:
                break
        await results.aclose()
        return req, engine.stats["generated_tokens"]

    req, before = asyncio.run(run())
    # The worker releases a request once its rows are out of the batch: from then on
    # nothing decodes for it.
    wait_until(lambda: req.released, 30, interval=0.01, what="the cancelled request's release")
    assert engine.stats["generated_tokens"] - before <= 2, "a cancelled request keeps no compute"


def test_incremental_detokenizer_round_trips_multibyte_text(engine: Engine) -> None:
    text = "Grüße aus Köln — 東京 😀 done."
    ids = engine.tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(engine.tokenizer)
    pieces = [detok.add(i) for i in ids]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


class _Poisoned:
    """The engine's model, except that a pass whose inputs hold ``poison`` fails."""

    def __init__(self, model: object, poison: int) -> None:
        self._model, self._poison = model, poison

    def __call__(self, *, input_ids: object, **kw: object) -> object:
        import torch

        assert isinstance(input_ids, torch.Tensor)
        if bool((input_ids == self._poison).any()):
            raise RuntimeError("this prompt breaks the model")
        return self._model(input_ids=input_ids, **kw)  # type: ignore[operator]

    def __getattr__(self, name: str) -> object:
        return getattr(self._model, name)


def test_a_request_that_breaks_the_model_fails_alone(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    good = [engine.encode_text(t) for t in ("The quick brown fox", "Once upon a time")]
    poison = 7
    assert all(poison not in p for p in good)

    async def run_all(paused: threading.Event) -> list[list[int] | BaseException]:
        hold = asyncio.ensure_future(engine.run_command(paused.wait))  # worker waits here
        tasks = [
            asyncio.create_task(_collect(engine, p, 8)) for p in [good[0], [poison, 3], good[1]]
        ]
        await asyncio.sleep(0.05)  # all three are queued before the worker admits any
        paused.set()
        await hold
        return await asyncio.gather(*tasks, return_exceptions=True)

    async def solo() -> list[list[int]]:
        return [await _collect(engine, p, 8) for p in good]

    expected = asyncio.run(solo())
    monkeypatch.setattr(engine, "model", _Poisoned(engine.model, poison))
    first, broken, second = asyncio.run(run_all(threading.Event()))
    assert isinstance(broken, RuntimeError) and "breaks the model" in str(broken)
    assert [first, second] == expected, "the rest of the batch completes as if alone"


def test_a_request_that_cannot_start_fails_alone_and_the_worker_lives_on(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from backend import batching

    real_init = batching.Row.__init__

    def init(self: batching.Row, req: GenerationRequest, *args: object) -> None:
        if req.params.seed == 13:
            raise ValueError("Overflow when unpacking long long")  # what a huge seed did
        real_init(self, req, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(batching.Row, "__init__", init)
    prompt = engine.encode_text("The quick brown fox")

    async def run() -> list[list[int] | BaseException]:
        bad = engine.submit(prompt, SamplingParams(max_tokens=4, temperature=1.0, seed=13))

        async def drain() -> list[int]:
            return [
                t
                for deltas in [d async for d in engine.results(bad)]
                for x in deltas
                for t in x.token_ids
            ]

        return await asyncio.gather(drain(), _collect(engine, prompt, 4), return_exceptions=True)

    broken, fine = asyncio.run(run())
    assert isinstance(broken, RuntimeError) and "Overflow" in str(broken)
    assert isinstance(fine, list) and len(fine) == 4
    assert len(asyncio.run(_collect(engine, prompt, 3))) == 3, "the worker still serves"
