"""Request and response bodies of the OpenAI-compatible API, as vLLM serves them.

Field names, defaults and limits follow OpenAI's API plus the vLLM extensions the project
uses (``return_token_ids``, ``ignore_eos``, the LoRA admin bodies), so the official SDK and
the project's client cannot tell the embedded server from vLLM. Unknown request fields are
ignored, as vLLM does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.grammar import GrammarError, GrammarSpec

# Largest n accepted: each choice is a sequence in the batch, so a huge n is a memory bomb.
MAX_N = 64
# OpenAI caps top_logprobs at 20 (chat); vLLM follows.
MAX_TOP_LOGPROBS = 20


def new_id(prefix: str) -> str:
    """A response id in OpenAI's style."""
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    """Unix time, as in ``created``."""
    return int(time.time())


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Request):
    """One part of a multi-part message; only text parts are supported."""

    type: Literal["text"] = "text"
    text: str


class ChatMessage(_Request):
    """A message of the conversation."""

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message content as one string."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Request):
    """``stream_options``."""

    include_usage: bool = False


class JsonSchemaFormat(_Request):
    """``response_format.json_schema`` (OpenAI): the schema the answer must follow."""

    name: str = "output"
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    """``response_format``: free text, any JSON object, or JSON following a schema."""

    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(_Request):
    """vLLM's ``structured_outputs``: exactly one constraint for the output."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = None
    json_object: bool | None = None


class _SamplingFields(_Request):
    model: str | None = Field(None, description="Base model name or a loaded adapter's name.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # vLLM only asks for > 0; a tiny positive value would blow logits up to inf.
    repetition_penalty: float = Field(1.0, ge=0.01, le=2.0, description="vLLM's extra parameter.")
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=MAX_N)
    # vLLM bounds the seed to a signed 64-bit integer, as torch's generators need.
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    return_token_ids: bool = False
    ignore_eos: bool = False
    # vLLM's extra parameter: no end of sequence before this many tokens.
    min_tokens: int = Field(0, ge=0)
    structured_outputs: StructuredOutputs | None = None
    # vLLM's older names for the same constraints.
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None

    def grammar_spec(self) -> GrammarSpec | None:
        """The one structured-output constraint a request asks for, in any of its spellings."""
        specs: list[GrammarSpec] = []
        fmt = getattr(self, "response_format", None)
        if fmt is not None and fmt.type == "json_object":
            specs.append(GrammarSpec("json_object"))
        if fmt is not None and fmt.type == "json_schema":
            if fmt.json_schema is None or fmt.json_schema.schema_ is None:
                raise GrammarError(
                    "response_format of type 'json_schema' needs json_schema.schema."
                )
            specs.append(GrammarSpec.json_schema(fmt.json_schema.schema_))
        wanted = self.structured_outputs
        json_schema = wanted.json_ if wanted and wanted.json_ is not None else self.guided_json
        regex = wanted.regex if wanted and wanted.regex else self.guided_regex
        choice = wanted.choice if wanted and wanted.choice is not None else self.guided_choice
        if json_schema is not None:
            specs.append(GrammarSpec.json_schema(json_schema))
        if regex:
            specs.append(GrammarSpec("regex", regex))
        if choice is not None:
            specs.append(GrammarSpec.choice(choice))
        if wanted is not None and wanted.json_object:
            specs.append(GrammarSpec("json_object"))
        if len(specs) > 1:
            raise GrammarError("Ask for one structured output per request (json, regex or choice).")
        return specs[0] if specs else None

    def stop_list(self) -> tuple[str, ...]:
        """``stop`` as a tuple of non-empty strings."""
        if self.stop is None:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)


class ChatCompletionRequest(_SamplingFields):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(..., min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    response_format: ResponseFormat | None = None


class CompletionRequest(_SamplingFields):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)
    echo: bool = False


class LoadLoRAAdapterRequest(_Request):
    """``POST /v1/load_lora_adapter`` (vLLM)."""

    lora_name: str = ""
    lora_path: str = ""
    load_inplace: bool = False


class UnloadLoRAAdapterRequest(_Request):
    """``POST /v1/unload_lora_adapter`` (vLLM)."""

    lora_name: str = ""
    lora_int_id: int | None = None


class UsageInfo(BaseModel):
    """Token counts of a request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class TopLogprob(BaseModel):
    """One alternative token."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob):
    """A sampled token with its alternatives."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    """``choices[i].logprobs`` of a chat completion."""

    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(BaseModel):
    """The assistant's message."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None


class ChatChoice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class ChatCompletionResponse(BaseModel):
    """A whole chat completion."""

    id: str = Field(default_factory=lambda: new_id("chatcmpl"))
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[ChatChoice]
    usage: UsageInfo
    prompt_token_ids: list[int] | None = None


class DeltaMessage(BaseModel):
    """What a streamed chunk adds to a choice."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(BaseModel):
    """One choice inside a streamed chunk."""

    index: int
    delta: DeltaMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed chat completion."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: UsageInfo | None = None
    prompt_token_ids: list[int] | None = None


class CompletionLogprobs(BaseModel):
    """``choices[i].logprobs`` of a text completion (the legacy shape)."""

    text_offset: list[int] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    tokens: list[str] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    """One choice of a text completion."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None
    token_ids: list[int] | None = None
    prompt_token_ids: list[int] | None = None


class CompletionResponse(BaseModel):
    """A text completion (whole, or one streamed chunk)."""

    id: str = Field(default_factory=lambda: new_id("cmpl"))
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=now)
    model: str
    choices: list[CompletionChoice]
    usage: UsageInfo | None = None


class ModelCard(BaseModel):
    """One entry of ``/v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=now)
    owned_by: str = "vllm"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    permission: list[dict[str, Any]] = Field(default_factory=list)


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class HealthResponse(BaseModel):
    """``GET /health``."""

    status: Literal["ok"] = "ok"
    model: str
    demo_model: bool
    fallback: bool = False


class ErrorInfo(BaseModel):
    """The ``error`` object of an error response (vLLM's current shape)."""

    message: str
    type: str
    param: str | None = None
    code: int


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorInfo
