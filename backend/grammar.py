"""Structured outputs: decoding under a grammar, as vLLM does with its xgrammar backend.

A request may ask for JSON matching a schema (``response_format`` ``json_schema``), any
JSON object (``json_object``), one of fixed strings (``choice``) or a regex, through the
OpenAI field or vLLM's own (``structured_outputs``, and the older ``guided_*`` fields).
The grammar is compiled once per distinct request (cached) and each constrained row gets
its own matcher: before a token is chosen, every token the grammar forbids is masked out,
so the output is valid by construction; the row stops when the grammar is complete.
Unconstrained rows in the same batch are untouched.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_CACHE_SIZE = 64


class GrammarError(ValueError):
    """The requested structure cannot be compiled (a 400 for the client)."""


@dataclass(frozen=True)
class GrammarSpec:
    """What a request constrains its output to: ``kind`` and its source text."""

    kind: str  # "json_schema" | "json_object" | "choice" | "regex"
    source: str = ""

    @classmethod
    def json_schema(cls, schema: Any) -> GrammarSpec:
        """A JSON schema given as an object or as JSON text."""
        # Key order kept: the grammar writes properties in the schema's order.
        text = schema if isinstance(schema, str) else json.dumps(schema)
        return cls("json_schema", text)

    @classmethod
    def choice(cls, options: list[str]) -> GrammarSpec:
        """Exactly one of ``options``."""
        if not options or not all(isinstance(o, str) and o for o in options):
            raise GrammarError("'choice' must be a non-empty list of non-empty strings.")
        return cls("choice", json.dumps(options))


class Grammars:
    """Compiles grammars against one tokenizer, with a small cache; thread-safe."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self.stop_ids = sorted(stop_ids)
        self._compiler: Any = None
        self._cache: OrderedDict[GrammarSpec, Any] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, spec: GrammarSpec) -> Any:
        """The compiled grammar of ``spec``; raises :class:`GrammarError` on a bad one."""
        with self._lock:
            if spec in self._cache:
                self._cache.move_to_end(spec)
                return self._cache[spec]
        compiled = self._compile(spec)
        with self._lock:
            self._cache[spec] = compiled
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return compiled

    def _compile(self, spec: GrammarSpec) -> Any:
        compiler = self._get_compiler()
        try:
            if spec.kind == "json_schema":
                return compiler.compile_json_schema(spec.source, any_whitespace=False)
            if spec.kind == "json_object":
                return compiler.compile_json_schema('{"type": "object"}', any_whitespace=False)
            if spec.kind == "choice":
                # EBNF string literals escape as JSON strings do.
                options = json.loads(spec.source)
                return compiler.compile_grammar(
                    "root ::= " + " | ".join(json.dumps(o) for o in options)
                )
            if spec.kind == "regex":
                return compiler.compile_regex(spec.source)
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError with a reason
            raise GrammarError(f"Cannot build the {spec.kind} grammar: {exc}") from exc
        raise GrammarError(f"Unknown structured output kind {spec.kind!r}.")

    def _get_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar as xgr

                info = xgr.TokenizerInfo.from_huggingface(
                    self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=self.stop_ids
                )
                self._compiler = xgr.GrammarCompiler(info, max_threads=1)
            return self._compiler


class GrammarState:
    """One row's position in its grammar: masks its logits, accepts its tokens."""

    def __init__(self, compiled: Any) -> None:
        import xgrammar as xgr

        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask: Any = None

    def constrain(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` (one row) with every token the grammar forbids set to -inf."""
        import xgrammar as xgr

        vocab = logits.shape[-1]
        if self._bitmask is None:
            self._bitmask = xgr.allocate_token_bitmask(1, vocab)
        self._matcher.fill_next_token_bitmask(self._bitmask)
        row = logits.unsqueeze(0).clone()
        # The CPU kernel of xgrammar; on CUDA it picks its own (triton, when installed).
        xgr.apply_token_bitmask_inplace(row, self._bitmask.to(row.device), vocab_size=vocab)
        return row[0]

    def accept(self, token: int) -> None:
        """Advance past ``token`` (one the mask allowed)."""
        self._matcher.accept_token(token)

    @property
    def complete(self) -> bool:
        """The output is whole: the grammar accepted its stop token or can go no further."""
        return bool(self._matcher.is_terminated())
