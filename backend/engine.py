"""The generation engine of the embedded server: one worker thread, batched decoding, LoRA.

Why it looks like this:

* Generation runs in one worker thread, never on the event loop; requests reach it through
  a thread-safe queue and results come back to each request's ``asyncio.Queue`` via
  ``call_soon_threadsafe``, so HTTP keeps flowing while the model computes.
* Requests on the same adapter version that are waiting together become one *group*,
  decoded as one left-padded batch with a KV cache (one forward pass per new token, never
  the whole prompt again). Groups on different adapters are stepped in turn, and before
  each forward pass exactly one adapter is made active: no forward pass mixes adapters.
* Every adapter load is a new version with its own id inside the peft model; a group keeps
  the version it started with, and a version's weights are deleted only when no request
  holds it, so a stream is never switched to other weights halfway (load in place or
  unload mid-stream included).
* Each sequence samples with its own ``torch.Generator``: a seeded request gives the same
  samples whatever else shares its batch, and greedy decoding is deterministic.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.adapters import AdapterError, AdapterRegistry, AdapterVersion
from backend.models import LoadedModel

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

GREEDY_EPSILON = 1e-5  # temperatures below this decode greedily, as in vLLM


@dataclass(frozen=True)
class SamplingParams:
    """How one request samples; the engine-side copy of the OpenAI parameters."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0
    json_object: bool = False
    ignore_eos: bool = False


@dataclass
class TokenLogprob:
    """Log-probability of one sampled token and its top alternatives."""

    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]]


@dataclass
class Delta:
    """What one step produced for one choice of a request."""

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas without re-decoding everything.

    Decodes a short window behind the last emitted token (as TGI and vLLM do) so that
    multi-byte characters split across tokens come out whole.
    """

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.prefix = 0
        self.read = 0

    def add(self, token_id: int) -> str:
        """Append one token; return the new text it completes (may be empty)."""
        self.ids.append(token_id)
        decode = self.tokenizer.decode
        prefix_text = decode(self.ids[self.prefix : self.read], skip_special_tokens=True)
        new_text = decode(self.ids[self.prefix :], skip_special_tokens=True)
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return str(new_text[len(prefix_text) :])
        return ""


class _JsonTracker:
    """Best-effort ``json_object`` mode: start at '{', stop when the object closes."""

    def __init__(self) -> None:
        self.started = False
        self.depth = 0
        self.in_string = False
        self.escape = False

    def feed(self, text: str) -> int | None:
        """Consume text; return the index just past the closing brace, if it is in ``text``."""
        for i, ch in enumerate(text):
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.started = True
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.started and self.depth <= 0:
                    return i + 1
        return None


class GenerationRequest:
    """One API request (with ``n`` choices) on its way through the engine."""

    def __init__(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        n: int,
        adapter: AdapterVersion | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.prompt_ids = prompt_ids
        self.params = params
        self.n = n
        self.adapter = adapter
        self.loop = loop
        self.out: asyncio.Queue[list[Delta] | BaseException] = asyncio.Queue()
        self.rows_left = n
        self.cancelled = False
        self.released = False

    def emit(self, item: list[Delta] | BaseException) -> None:
        """Hand results to the request's event loop (called from the worker)."""
        try:
            self.loop.call_soon_threadsafe(self.out.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled = True


class _Row:
    """One sequence being decoded (a choice of a request)."""

    def __init__(self, req: GenerationRequest, index: int, tokenizer: Any, device: str) -> None:
        import torch

        self.req = req
        self.index = index
        self.params = req.params
        self.detok = IncrementalDetokenizer(tokenizer)
        self.text = ""
        self.sent = 0
        self.count = 0
        self.finished = False
        self.json = _JsonTracker() if req.params.json_object else None
        self.json_fed = 0  # how much of ``text`` the JSON tracker has seen
        self.generator: torch.Generator | None = None
        if req.params.temperature >= GREEDY_EPSILON:
            self.generator = torch.Generator(device=device)
            seed = req.params.seed
            if seed is None:
                self.generator.seed()
            else:
                self.generator.manual_seed(seed * 1_000_003 + index)


class _Group:
    """Rows decoded together, all on one adapter version, sharing one KV cache."""

    def __init__(self, uid: str | None, rows: list[_Row]) -> None:
        self.uid = uid
        self.rows = rows
        self.cache: Any = None
        self.mask: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.last: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return all(r.finished for r in self.rows)


@dataclass(eq=False)
class _Slot:
    """A peft adapter name whose weights hold one adapter version at a time."""

    name: str
    signature: str | None
    params: dict[str, Any]  # key as saved by peft → the slot's parameter
    version: AdapterVersion | None = None


def _lora_signature(config: dict[str, Any]) -> str | None:
    """What must match for one LoRA's weights to be copied into another's slot.

    None for adapters with parts beyond plain A/B matrices (DoRA, biases, extra modules):
    those always get a fresh slot.
    """
    if (
        config.get("use_dora")
        or config.get("modules_to_save")
        or config.get("bias", "none") != "none"
    ):
        return None
    targets = config.get("target_modules")
    keys = ("r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "layers_to_transform")
    shape = {k: config.get(k) for k in keys}
    shape["target_modules"] = sorted(targets) if isinstance(targets, list) else targets
    shape["exclude_modules"] = config.get("exclude_modules")
    return json.dumps(shape, sort_keys=True, default=str)


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
        self.max_loras = max_loras
        self.max_num_seqs = max_num_seqs
        self.batch_window_s = batch_window_s
        self.stats = {"forward_passes": 0, "max_batch_rows": 0, "generated_tokens": 0}
        self.registry = AdapterRegistry()
        self._peft: Any = None
        self._tuner_layers: list[Any] = []
        self._slots: dict[str, _Slot] = {}
        self._slot_ids = itertools.count()
        self._resident: OrderedDict[str, _Slot] = OrderedDict()
        self._active_slot: str | None = None
        self._pending: queue.SimpleQueue[GenerationRequest] = queue.SimpleQueue()
        self._commands: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._groups: list[_Group] = []
        self._json_start_ids: Any = None
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids: set[int] = set(eos if isinstance(eos, list) else [eos])
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
        adapter: AdapterVersion | None = None,
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

    async def results(self, req: GenerationRequest) -> AsyncIterator[list[Delta]]:
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

    async def load_adapter(self, version: AdapterVersion) -> None:
        """Load ``version``'s weights into the model (on the worker thread)."""
        await self.run_command(lambda: self._make_resident(version))

    def encode_chat(self, messages: list[dict[str, Any]]) -> list[int]:
        """Token ids of a chat prompt, with the model's chat template."""
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a plain-text prompt."""
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    def token_text(self, token_id: int) -> str:
        """The text of one token, as vLLM reports it in logprobs."""
        return str(self.tokenizer.decode([token_id]))

    # ---- worker thread ---------------------------------------------------------------

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while not self._stop.is_set():
                self._run_commands()
                self._drop_retired()
                if not self._groups:
                    if self._pending.empty():
                        self._wake.wait(timeout=0.5)
                        self._wake.clear()
                        continue
                    # Idle until now: give requests sent together a moment to arrive, so
                    # they start as one batch instead of one group each.
                    time.sleep(self.batch_window_s)
                self._admit()
                for group in list(self._groups):
                    self._step_safely(group)
                    self._compact(group)
                    if not group.rows:
                        self._groups.remove(group)
                    self._run_commands()  # admin calls wait at most one forward pass
                self._merge_groups()
        for group in self._groups:
            for row in group.rows:
                row.req.emit(RuntimeError("model server is shutting down"))

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
                    self._make_resident(version)
                except AdapterError as exc:
                    for req in reqs:
                        req.emit(exc)
                        self._release(req)
                    continue
            rows: list[_Row] = []
            for req in reqs:
                if rows and len(rows) + req.n > self.max_num_seqs:
                    self._groups.append(_Group(uid, rows))
                    rows = []
                rows += [_Row(req, i, self.tokenizer, self.device) for i in range(req.n)]
            if rows:
                self._groups.append(_Group(uid, rows))

    def _compact(self, group: _Group) -> None:
        """Drop finished rows from the batch (and their KV cache); release done requests."""
        keep = [i for i, row in enumerate(group.rows) if not row.finished]
        if len(keep) == len(group.rows):
            return
        for row in group.rows:
            if row.finished:
                row.req.rows_left -= 1
                if row.req.rows_left <= 0:
                    self._release(row.req)
        if keep and group.cache is not None:
            import torch

            assert group.mask is not None and group.positions is not None
            assert group.last is not None
            idx = torch.tensor(keep, device=self.device)
            for layer in group.cache.layers:
                layer.batch_select_indices(idx)
            group.mask, group.positions = group.mask[idx], group.positions[idx]
            group.last = group.last[idx]
        group.rows = [group.rows[i] for i in keep]

    def _merge_groups(self) -> None:
        """Fold groups decoding on the same adapter into one batch (continuous batching)."""
        first: dict[str | None, _Group] = {}
        for group in list(self._groups):
            if group.cache is None or not group.rows or not _mergeable(group.cache):
                continue
            into = first.get(group.uid)
            if into is None or len(into.rows) + len(group.rows) > self.max_num_seqs:
                first[group.uid] = group
                continue
            _merge(into, group)
            self._groups.remove(group)

    def _step_safely(self, group: _Group) -> None:
        try:
            self._step(group)
        except Exception as exc:
            logger.exception("generation failed for a batch of %d", len(group.rows))
            failed = {id(r.req): r.req for r in group.rows if not r.finished}
            for row in group.rows:
                row.finished = True
            for req in failed.values():
                req.emit(RuntimeError(f"generation failed: {exc}"))

    # ---- adapters (worker thread only) ------------------------------------------------
    #
    # Adapter weights live in peft "slots" (adapter names inside the peft model). A slot
    # holds one adapter version at a time; when a version is unloaded or evicted its slot
    # is kept and refilled by the next adapter with the same LoRA shape by copying tensors
    # in place, which is what makes a hot-swap cost milliseconds instead of a peft
    # re-injection that walks the whole model. At most ``max_loras`` slots exist, except
    # while more versions are in use by running requests.

    def _make_resident(self, version: AdapterVersion) -> None:
        if version.uid in self._resident:
            self._resident.move_to_end(version.uid)
            return
        started = time.perf_counter()
        signature = _lora_signature(version.spec.config)
        slot = next(
            (
                s
                for s in self._slots.values()
                if s.version is None and signature is not None and s.signature == signature
            ),
            None,
        )
        how = "refilled"
        if slot is None or not self._fill(slot, version):
            self._make_room()
            slot = self._inject(version, signature)
            how = "injected"
        slot.version = version
        self._resident[version.uid] = slot
        logger.info(
            "adapter %s (%s) resident in slot %s (%s) in %.0f ms",
            version.name,
            version.uid,
            slot.name,
            how,
            1000 * (time.perf_counter() - started),
        )

    def _fill(self, slot: _Slot, version: AdapterVersion) -> bool:
        """Copy ``version``'s weights into a free slot of the same shape; False if they differ."""
        from safetensors.torch import load_file

        weights = version.spec.path / "adapter_model.safetensors"
        if not weights.is_file():
            return False
        state = load_file(weights, device=str(self.device))
        if state.keys() != slot.params.keys() or any(
            state[k].shape != slot.params[k].shape for k in state
        ):
            return False
        for key, tensor in state.items():
            slot.params[key].copy_(tensor)
        return True

    def _inject(self, version: AdapterVersion, signature: str | None) -> _Slot:
        from peft import PeftModel

        name = f"slot{next(self._slot_ids)}"
        path = str(version.spec.path)
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self.model, path, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
                )
            else:
                self._peft.load_adapter(
                    path, adapter_name=name, is_trainable=False, low_cpu_mem_usage=True
                )
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            if self._peft is not None and name in self._peft.peft_config:
                self._peft.delete_adapter(name)
            raise AdapterError(
                f"Loading LoRA adapter '{version.name}' from {path} failed: {exc}. "
                "Is it an adapter for the served model's architecture?",
                400,
            ) from exc
        self._peft.to(self.device)
        marker = f".{name}."
        params = {
            key.replace(marker, "."): param
            for key, param in self._peft.named_parameters()
            if marker in key
        }
        slot = _Slot(name=name, signature=signature, params=params)
        self._slots[name] = slot
        self._refresh_layers()
        return slot

    def _make_room(self) -> None:
        """Free slots until a new one fits under ``max_loras`` (LRU idle versions first)."""
        while len(self._slots) >= self.max_loras:
            free = next((s for s in self._slots.values() if s.version is None), None)
            if free is not None:
                self._delete_slot(free)
                continue
            busy = {g.uid for g in self._groups}
            idle = next(
                (
                    v
                    for uid, slot in self._resident.items()
                    if (v := slot.version) is not None
                    and uid not in busy
                    and not self.registry.in_use(v)
                ),
                None,
            )
            if idle is None:
                return  # every resident adapter is in use: go above max_loras for now
            logger.info("evicting idle adapter %s (%s) from memory (LRU)", idle.name, idle.uid)
            self._free(idle.uid)

    def _drop_retired(self) -> None:
        for version in self.registry.collect_retired():
            if version.uid in self._resident:
                self._free(version.uid)
        while len(self._slots) > self.max_loras:
            free = next((s for s in self._slots.values() if s.version is None), None)
            if free is None:
                return
            self._delete_slot(free)

    def _free(self, uid: str) -> None:
        slot = self._resident.pop(uid)
        slot.version = None

    def _delete_slot(self, slot: _Slot) -> None:
        del self._slots[slot.name]
        if self._active_slot == slot.name:
            self._active_slot = None
        self._peft.delete_adapter(slot.name)
        self._refresh_layers()

    def _refresh_layers(self) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._tuner_layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        self._active_slot = "?"  # force the next _activate to set every layer

    def _activate(self, uid: str | None) -> None:
        slot = None if uid is None else self._resident[uid].name
        if slot == self._active_slot or (slot is None and not self._tuner_layers):
            return
        for layer in self._tuner_layers:
            if slot is None:
                layer.enable_adapters(False)
            else:
                layer.enable_adapters(True)
                layer.set_adapter(slot, inference_mode=True)
        self._active_slot = slot

    # ---- decoding (worker thread only) ------------------------------------------------

    def _step(self, group: _Group) -> None:
        import torch

        self._activate(group.uid)
        if group.cache is None:
            prompts = [r.req.prompt_ids for r in group.rows]
            width = max(len(p) for p in prompts)
            pad = self.tokenizer.pad_token_id or 0
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
            mask = torch.tensor(
                [[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device
            )
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
        else:
            assert group.mask is not None and group.positions is not None
            assert group.last is not None
            ids = group.last
            mask = torch.cat([group.mask, group.mask.new_ones((len(group.rows), 1))], dim=1)
            positions = group.positions[:, -1:] + 1
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

    def _sample(self, group: _Group, logits: torch.Tensor) -> list[int]:
        import torch

        need_logprobs = any(r.params.logprobs for r in group.rows if not r.finished)
        logprobs = torch.log_softmax(logits, dim=-1) if need_logprobs else None
        greedy = logits.argmax(dim=-1).tolist()
        tokens: list[int] = []
        by_req: dict[int, list[Delta]] = {}
        for i, row in enumerate(group.rows):
            if row.finished or row.req.cancelled:
                row.finished = True
                tokens.append(greedy[i])
                continue
            row_logits = logits[i]
            biased = row.json is not None and not row.json.started
            if biased:
                row_logits = row_logits + self._json_start_bias(row_logits)
            if row.generator is None:
                token = int(row_logits.argmax()) if biased else greedy[i]
            else:
                token = self._sample_one(row_logits, row)
            tokens.append(token)
            delta = self._advance(row, token, logprobs[i] if logprobs is not None else None)
            by_req.setdefault(id(row.req), []).append(delta)
        self._emit(group, by_req)
        return tokens

    def _emit(self, group: _Group, by_req: dict[int, list[Delta]]) -> None:
        seen: set[int] = set()
        for row in group.rows:
            key = id(row.req)
            if key in by_req and key not in seen:
                seen.add(key)
                row.req.emit(by_req[key])

    def _sample_one(self, logits: torch.Tensor, row: _Row) -> int:
        import torch

        scaled = logits / row.params.temperature
        probs = torch.softmax(scaled, dim=-1)
        if row.params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            cumulative = sorted_probs.cumsum(-1)
            drop = cumulative - sorted_probs > row.params.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=row.generator).item())

    def _json_start_bias(self, logits: torch.Tensor) -> torch.Tensor:
        import torch

        if self._json_start_ids is None:
            allowed = [
                i
                for i in range(len(self.tokenizer))
                if self.tokenizer.decode([i], skip_special_tokens=True).lstrip().startswith("{")
            ]
            bias = torch.full((logits.shape[-1],), float("-inf"), device=logits.device)
            bias[allowed] = 0.0
            self._json_start_ids = bias if allowed else torch.zeros_like(bias)
        return self._json_start_ids  # type: ignore[no-any-return]

    def _advance(self, row: _Row, token: int, logprobs: torch.Tensor | None) -> Delta:
        """Record ``token`` for ``row``; return the text it releases to the client."""
        params = row.params
        row.count += 1
        delta = Delta(index=row.index, token_ids=[token])
        if logprobs is not None and params.logprobs:
            top: list[tuple[int, str, float]] = []
            if params.top_logprobs:
                values, ids = logprobs.topk(params.top_logprobs)
                top = [
                    (int(t), self.token_text(int(t)), float(v))
                    for t, v in zip(ids.tolist(), values.tolist(), strict=True)
                ]
            delta.logprobs.append(
                TokenLogprob(token, self.token_text(token), float(logprobs[token]), top)
            )
        if token in self.eos_ids and not params.ignore_eos:
            return self._finish(row, delta, "stop")
        row.text += row.detok.add(token)
        if row.json is not None:
            end = row.json.feed(row.text[row.json_fed :])
            if end is not None:
                row.text = row.text[: row.json_fed + end]
                return self._finish(row, delta, "stop")
            row.json_fed = len(row.text)
        for stop in params.stop:
            at = row.text.find(stop, max(0, row.sent - len(stop)))
            if at != -1:
                row.text = row.text[:at]
                return self._finish(row, delta, "stop")
        if row.count >= params.max_tokens:
            return self._finish(row, delta, "length")
        hold = 0
        for stop in params.stop:
            for k in range(min(len(stop) - 1, len(row.text)), 0, -1):
                if row.text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        upto = len(row.text) - hold
        if upto > row.sent:
            delta.text = row.text[row.sent : upto]
            row.sent = upto
        return delta

    def _finish(self, row: _Row, delta: Delta, reason: str) -> Delta:
        row.finished = True
        if len(row.text) > row.sent:
            delta.text = row.text[row.sent :]
            row.sent = len(row.text)
        delta.finish_reason = reason
        return delta


def _mergeable(cache: Any) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _left_pad(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    if width == 0:
        return t
    import torch

    shape = list(t.shape)
    shape[dim] = width
    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _merge(into: _Group, other: _Group) -> None:
    """Append ``other``'s rows to ``into``, left-padding the shorter KV cache with masked zeros."""
    import torch

    assert into.mask is not None and other.mask is not None
    assert into.positions is not None and other.positions is not None
    assert into.last is not None and other.last is not None
    t1, t2 = into.mask.shape[1], other.mask.shape[1]
    width = max(t1, t2)
    for mine, theirs in zip(into.cache.layers, other.cache.layers, strict=True):
        mine.keys = torch.cat(
            [_left_pad(mine.keys, width - t1, -2), _left_pad(theirs.keys, width - t2, -2)]
        )
        mine.values = torch.cat(
            [_left_pad(mine.values, width - t1, -2), _left_pad(theirs.values, width - t2, -2)]
        )
    into.mask = torch.cat(
        [_left_pad(into.mask, width - t1, 1), _left_pad(other.mask, width - t2, 1)]
    )
    into.positions = torch.cat([into.positions, other.positions])
    into.last = torch.cat([into.last, other.last])
    into.rows += other.rows
