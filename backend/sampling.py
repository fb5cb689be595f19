"""Turning one row of logits into the next token and the text a client may see.

Kept apart from the engine because none of it depends on batching or adapters: each
choice carries its own sampling state (:class:`ChoiceSampler`), so what one sequence
samples never depends on what else shares its batch.

* Each sequence samples with its own ``torch.Generator``: a seeded request gives the same
  samples whatever else shares its batch, and greedy decoding is deterministic.
* Text is released incrementally and held back while it could still become a stop string,
  so a client never sees text that a stop string later cuts off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backend.grammar import GrammarState

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

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
    ignore_eos: bool = False
    min_tokens: int = 0
    # vLLM's penalties: presence/frequency subtract from tokens already generated (once, or
    # per occurrence); repetition divides (multiplies, if negative) the logits of tokens in
    # the prompt or the output. Neutral values change nothing.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    # A compiled xgrammar grammar (see ``backend.grammar``) the output must follow.
    grammar: Any = field(default=None, compare=False)


@dataclass
class TokenLogprob:
    """Log-probability of one sampled token and its top alternatives."""

    token_id: int
    token: str
    logprob: float
    top: list[tuple[int, str, float]]


@dataclass
class TokenDelta:
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


class ChoiceSampler:
    """The sampling state of one choice: its generator, its text so far, what was sent."""

    def __init__(
        self,
        params: SamplingParams,
        index: int,
        tokenizer: Any,
        device: str,
        prompt_ids: list[int] | None = None,
    ) -> None:
        import torch

        self.index = index
        self.params = params
        self.output_counts: dict[int, int] = {}
        self.penalized = (
            params.presence_penalty != 0.0
            or params.frequency_penalty != 0.0
            or params.repetition_penalty != 1.0
        )
        # Tokens the repetition penalty applies to before any is generated.
        self._prompt_ids = (
            frozenset(prompt_ids or ()) if params.repetition_penalty != 1.0 else frozenset()
        )
        self.detok = IncrementalDetokenizer(tokenizer)
        self.text = ""
        self.sent = 0
        self.count = 0
        self.finished = False
        self.grammar = GrammarState(params.grammar) if params.grammar is not None else None
        self.generator: torch.Generator | None = None
        if params.temperature >= GREEDY_EPSILON:
            self.generator = torch.Generator(device=device)
            if params.seed is None:
                self.generator.seed()
            else:
                # Modulo 2**64: torch takes any unsigned 64-bit seed, nothing larger.
                self.generator.manual_seed((params.seed * 1_000_003 + index) % 2**64)

    def penalize(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (one row) with vLLM's presence, frequency and repetition penalties."""
        import torch

        params = self.params
        out = logits.clone()
        if params.repetition_penalty != 1.0:
            seen = torch.tensor(
                sorted(self._prompt_ids.union(self.output_counts)),
                dtype=torch.long,
                device=logits.device,
            )
            if len(seen):
                values = out[seen]
                out[seen] = torch.where(
                    values > 0,
                    values / params.repetition_penalty,
                    values * params.repetition_penalty,
                )
        if self.output_counts and (params.presence_penalty or params.frequency_penalty):
            ids = torch.tensor(list(self.output_counts), dtype=torch.long, device=logits.device)
            counts = torch.tensor(
                list(self.output_counts.values()), dtype=out.dtype, device=logits.device
            )
            out[ids] -= params.frequency_penalty * counts + params.presence_penalty
        return out

    def sample(self, logits: torch.Tensor) -> int:
        """Draw a token from ``logits`` with this choice's temperature, top-p and generator."""
        import torch

        scaled = logits / self.params.temperature
        probs = torch.softmax(scaled, dim=-1)
        if self.params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            cumulative = sorted_probs.cumsum(-1)
            drop = cumulative - sorted_probs > self.params.top_p
            sorted_probs[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=self.generator).item())

    def advance(
        self,
        token: int,
        logprobs: torch.Tensor | None,
        token_text: Callable[[int], str],
        eos_ids: set[int],
    ) -> TokenDelta:
        """Record ``token``; return the text it releases to the client."""
        params = self.params
        self.count += 1
        self.output_counts[token] = self.output_counts.get(token, 0) + 1
        delta = TokenDelta(index=self.index, token_ids=[token])
        if logprobs is not None and params.logprobs:
            delta.logprobs.append(self._logprob(token, logprobs, token_text))
        if self.grammar is not None:
            self.grammar.accept(token)
        if token in eos_ids and not params.ignore_eos:
            return self._finish(delta, "stop")
        self.text += self.detok.add(token)
        if self.grammar is not None and self.grammar.complete:
            return self._finish(delta, "stop")
        for stop in params.stop:
            at = self.text.find(stop, max(0, self.sent - len(stop)))
            if at != -1:
                self.text = self.text[:at]
                return self._finish(delta, "stop")
        if self.count >= params.max_tokens:
            return self._finish(delta, "length")
        upto = len(self.text) - self._stop_prefix_held()
        if upto > self.sent:
            delta.text = self.text[self.sent : upto]
            self.sent = upto
        return delta

    def _logprob(
        self, token: int, logprobs: torch.Tensor, token_text: Callable[[int], str]
    ) -> TokenLogprob:
        top: list[tuple[int, str, float]] = []
        if self.params.top_logprobs:
            values, ids = logprobs.topk(self.params.top_logprobs)
            top = [
                (int(t), token_text(int(t)), float(v))
                for t, v in zip(ids.tolist(), values.tolist(), strict=True)
            ]
        return TokenLogprob(token, token_text(token), float(logprobs[token]), top)

    def _stop_prefix_held(self) -> int:
        """How many trailing characters could still start a stop string."""
        hold = 0
        for stop in self.params.stop:
            for k in range(min(len(stop) - 1, len(self.text)), 0, -1):
                if self.text.endswith(stop[:k]):
                    hold = max(hold, k)
                    break
        return hold

    def _finish(self, delta: TokenDelta, reason: str) -> TokenDelta:
        self.finished = True
        if len(self.text) > self.sent:
            delta.text = self.text[self.sent :]
            self.sent = len(self.text)
        delta.finish_reason = reason
        return delta
