"""The generation engine of the embedded server: one worker thread, batched decoding, LoRA.

Why it looks like this:

* Generation runs in one worker thread, never on the event loop; requests reach it through
  a thread-safe queue and results come back to each request's ``asyncio.Queue`` via
  ``call_soon_threadsafe``, so HTTP keeps flowing while the model computes.
* Admin work that touches the model (loading an adapter) is queued to the same thread and
  runs between forward passes, so it never races a batch and waits at most one pass.
* The engine only schedules: how rows are batched is :mod:`backend.batching`, which adapter
  weights are in the model is :mod:`backend.lora_slots`, and how a token is chosen and
  turned into text is :mod:`backend.sampling`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from backend.adapters import AdapterError, AdapterRegistry, LoadedAdapter
from backend.batching import Group, compact, make_groups, merge_groups
from backend.grammar import Grammars
from backend.lora_slots import LoraSlots
from backend.models import LoadedModel
from backend.sampling import SamplingParams, TokenDelta

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class GenerationRequest:
    """One API request (with ``n`` choices) on its way through the engine."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int,
        adapter: LoadedAdapter | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.n = n
        self.adapter = adapter
        self.loop = loop
        self.out: asyncio.Queue[list[TokenDelta] | BaseException] = asyncio.Queue()
        self.rows_left = n
        self.cancelled = False
        self.released = False

    def emit(self, item: list[TokenDelta] | BaseException) -> None:
        """Hand results to the request's event loop (called from the worker)."""
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True


class Engine:
    """Owns the model, the worker thread, and the adapters loaded into the model."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        max_loras: int = 4,
        max_num_seqs: int = 32,
        batch_window_s: float = 0.005,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.max_num_seqs = max_num_seqs
        self.batch_window_s = batch_window_s
        self.stats = {"forward_passes": 0, "max_batch_rows": 0, "generated_tokens": 0}
        self.registry = AdapterRegistry()
        self.lora = LoraSlots(self.model, self.device, self.registry, max_loras)
        self._pending: queue.SimpleQueue[GenerationRequest] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._groups: list[Group] = []
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
        self._eos_list = sorted(self.eos_ids)
        # Structured outputs; the compiler is built on first use (it scans the vocabulary).
        self.grammars = Grammars(self.tokenizer, self.vocab_size, self.eos_ids)
        self._thread = threading.Thread(target=self._run, name="generation-worker", daemon=True)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the worker thread (in-flight requests get an error)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    # ---- public API (event-loop side) ------------------------------------------------

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int = 1,
        adapter: LoadedAdapter | None = None,
    ) -> GenerationRequest:
        """Queue a request for ``n`` choices; read its results with :meth:`results`.

        Must be called on the event loop. ``adapter`` must be a reference taken with
        ``registry.acquire``: the engine releases it when the request ends, also when the
        results are never read.
        """
        req = GenerationRequest(prompt_ids, params, n, adapter, asyncio.get_running_loop())
        self._pending.put(req)
        self._wake.set()
        return req

    async def results(self, req: GenerationRequest) -> AsyncIterator[list[TokenDelta]]:
        """Yield the deltas of each step until every choice has finished.

        Leaving the iteration early (client gone) cancels the request.
        """
        remaining = req.n
        try:
            while remaining:
                item = await req.out.get()
                if isinstance(item, BaseException):
                    raise item
                remaining -= sum(1 for d in item if d.finish_reason is not None)
                yield item
        finally:
            req.cancelled = True
            self._wake.set()

    def wake(self) -> None:
        """Let the worker look at its queues now (e.g. to free an unloaded adapter)."""
        self._wake.set()

    async def run_command(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker thread between forward passes and return its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._commands.put((fn, future))
        self._wake.set()
        return await asyncio.wrap_future(future)

    async def load_adapter(self, version: LoadedAdapter) -> None:
        """Load ``version``'s weights into the model (on the worker thread)."""
        await self.run_command(lambda: self.lora.make_resident(version, self._busy()))

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of a chat prompt, with the model's chat template."""
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain-text prompt."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def vocab_size(self) -> int:
        """How many token ids the model embeds: valid prompt ids are below this."""
        return int(self.model.get_input_embeddings().num_embeddings)

    def token_text(self, token_id: int) -> str:
        """The text of one token, as vLLM reports it in logprobs."""
        return str(self.tokenizer.decode([token_id]))

    # ---- worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    self._iterate()
                except Exception:
                    # Never let the worker die: every later request would hang. What was
                    # running fails; the next requests start clean.
                    logger.exception("the generation worker hit an unexpected error")
                    self._fail_all(RuntimeError("generation failed: internal error"))
        self._fail_all(RuntimeError("model server is shutting down"))

    def _iterate(self) -> None:
        """One round: admin commands, new requests, one forward pass of every group."""
        self._run_commands()
        self.lora.drop_retired()
        if not self._groups:
            if self._pending.empty():
                self._wake.wait(timeout=0.5)
                self._wake.clear()
                return
            # Idle until now: give requests sent together a moment to arrive, so they
            # start as one batch instead of one group each.
            time.sleep(self.batch_window_s)
        self._admit()
        for group in list(self._groups):
            self._step_safely(group)
            for req in compact(group, self.device):
                self._release(req)
            if not group.rows:
                self._groups.remove(group)
            self._run_commands()  # admin calls wait at most one forward pass
        merge_groups(self._groups, self.max_num_seqs)

    def _fail_all(self, error: Exception) -> None:
        failed = {id(row.req): row.req for group in self._groups for row in group.rows}
        self._groups = []
        for req in failed.values():
            req.emit(error)
            self._release(req)

    def _run_commands(self) -> None:
        while True:
            try:
                fn, future = self._commands.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

    def _release(self, req: GenerationRequest) -> None:
        if not req.released:
            req.released = True
            if req.adapter is not None:
                self.registry.release(req.adapter)

    def _admit(self) -> None:
        by_uid: dict[str | None, list[GenerationRequest]] = {}
        while True:
            try:
                req = self._pending.get_nowait()
            except queue.Empty:
                break
            if req.cancelled:
                self._release(req)
                continue
            by_uid.setdefault(req.adapter.uid if req.adapter else None, []).append(req)
        for uid, reqs in by_uid.items():
            version = reqs[0].adapter
            if version is not None:
                try:
                    self.lora.make_resident(version, self._busy())
                except AdapterError as exc:
                    for req in reqs:
                        req.emit(exc)
                        self._release(req)
                    continue
            self._start_groups(uid, reqs)

    def _start_groups(self, uid: str | None, reqs: list[GenerationRequest]) -> None:
        groups, failed = make_groups(uid, reqs, self.max_num_seqs, self.tokenizer, self.device)
        self._groups += groups
        for req, exc in failed:
            logger.warning("a request could not start: %s", exc)
            req.emit(RuntimeError(f"generation failed: {exc}"))
            self._release(req)

    def _busy(self) -> set[str | None]:
        """Adapter uids that running groups decode on."""
        return {g.uid for g in self._groups}

    def _step_safely(self, group: Group) -> None:
        try:
            self._step(group)
        except Exception as exc:
            requests = list({id(r.req): r.req for r in group.rows if not r.finished}.values())
            if group.cache is None and len(requests) > 1:
                # The first pass failed before any row moved: retry each request alone, so
                # only the one that breaks the model fails.
                logger.warning(
                    "a batch of %d requests failed (%s); retrying each", len(requests), exc
                )
                for req in requests:
                    self._start_groups(group.uid, [req])
                group.rows = []
                return
            logger.exception("generation failed for a batch of %d", len(group.rows))
            for row in group.rows:
                row.finished = True
            for req in requests:
                req.emit(RuntimeError(f"generation failed: {exc}"))

    # ---- decoding (worker thread only) ------------------------------------------------

    def _step(self, group: Group) -> None:
        import torch

        self.lora.activate(group.uid)
        ids, mask, positions = group.next_inputs(self.tokenizer.pad_token_id or 0, self.device)
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=group.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        group.cache, group.mask, group.positions = out.past_key_values, mask, positions[:, -1:]
        self.stats["forward_passes"] += 1
        self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(group.rows))
        self.stats["generated_tokens"] += sum(not r.finished for r in group.rows)
        logits = out.logits[:, -1, :].float()
        tokens = self._sample(group, logits)
        group.last = torch.tensor(tokens, device=self.device).unsqueeze(1)

    def _sample(self, group: Group, logits: torch.Tensor) -> list[int]:
        import torch

        need_logprobs = any(r.params.logprobs for r in group.rows if not r.finished)
        logprobs = torch.log_softmax(logits, dim=-1) if need_logprobs else None
        greedy = logits.argmax(dim=-1).tolist()
        tokens: list[int] = []
        by_req: dict[int, list[TokenDelta]] = {}
        for i, row in enumerate(group.rows):
            if row.finished or row.req.cancelled:
                row.finished = True
                tokens.append(greedy[i])
                continue
            row_logits = logits[i]
            early = row.count < row.params.min_tokens
            adjusted = row.grammar is not None or row.penalized or early
            if row.penalized:
                row_logits = row.penalize(row_logits)
            if early:  # vLLM's min_tokens: the sequence may not end yet
                row_logits = row_logits.clone()
                row_logits[self._eos_list] = float("-inf")
            if row.grammar is not None:
                row_logits = row.grammar.constrain(row_logits)
            if row.generator is None:
                token = int(row_logits.argmax()) if adjusted else greedy[i]
            else:
                token = row.sample(row_logits)
            tokens.append(token)
            row_logprobs = logprobs[i] if logprobs is not None else None
            delta = row.advance(token, row_logprobs, self.token_text, self.eos_ids)
            by_req.setdefault(id(row.req), []).append(delta)
        self._emit(group, by_req)
        return tokens

    def _emit(self, group: Group, by_req: dict[int, list[TokenDelta]]) -> None:
        seen: set[int] = set()
        for row in group.rows:
            key = id(row.req)
            if key in by_req and key not in seen:
                seen.add(key)
                row.req.emit(by_req[key])
