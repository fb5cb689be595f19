"""LoRA adapters on disk and in the server: validation before loading, and named versions.

Loading an adapter into a running server is an admin action the trainer performs with
paths it wrote itself, but the endpoint is still reachable over HTTP, so a path is
accepted only inside the configured adapters root (after resolving symlinks), and an
adapter is checked against the served model and the rank limit *before* peft touches the
model: a wrong adapter must be a 400 with a message, never a half-modified model.

Every load creates a new :class:`LoadedAdapter` with its own internal id, even when a
name is reloaded in place. Requests hold a reference to the version they started on, so
a stream keeps its adapter's weights until it ends, whatever happens to the name.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# Linux's PATH_MAX: a longer path cannot name a file, so it is a client error, not a 500.
MAX_PATH_CHARS = 4096
# Adapter names travel as the "model" field of every request and in logs and metrics: a
# short token of letters, digits and ._- (no spaces or slashes), like a served model name.
MAX_NAME_CHARS = 128
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class AdapterError(Exception):
    """An adapter cannot be loaded; ``status_code`` is what the HTTP layer answers."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


@dataclass(frozen=True)
class AdapterSpec:
    """A validated adapter directory, with its weights already read and checked."""

    path: Path
    rank: int
    base_model: str | None
    config: dict[str, Any]
    weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)


def validate_adapter_name(name: str) -> None:
    """Refuse a name clients could not send back as ``model`` (400 with the rule)."""
    if len(name) > MAX_NAME_CHARS or not _NAME.fullmatch(name):
        shown = name if len(name) <= 40 else name[:40] + "..."
        raise AdapterError(
            f"Invalid LoRA adapter name {shown!r}: use 1-{MAX_NAME_CHARS} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (no spaces or slashes).",
            400,
        )


def resolve_adapter_path(lora_path: str, adapters_root: Path) -> Path:
    """Resolve ``lora_path`` (absolute, or relative to the root) and keep it inside the root.

    Raises:
        AdapterError: 400 when the path escapes the root, 404 when it does not exist.
    """
    if "\x00" in lora_path or len(lora_path) > MAX_PATH_CHARS:
        raise AdapterError(
            f"Invalid 'lora_path': it must be a file path of at most {MAX_PATH_CHARS} "
            "characters without NUL bytes.",
            400,
        )
    root = adapters_root.expanduser().resolve()
    try:
        raw = Path(lora_path).expanduser()
        resolved = (raw if raw.is_absolute() else root / raw).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise AdapterError(f"Invalid 'lora_path' {lora_path[:200]!r}: {exc}", 400) from exc
    if not resolved.is_relative_to(root):
        raise AdapterError(
            f"Adapter path '{lora_path}' resolves to {resolved}, outside the adapters root "
            f"{root}. Put the adapter under {root} (or start the server with "
            "--adapters-root / ADAPTERS_DIR pointing at its parent).",
            400,
        )
    if not resolved.exists():
        raise AdapterError(f"No adapter found at '{lora_path}' ({resolved} does not exist).", 404)
    return resolved


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _config_rank(config: dict[str, Any], config_file: Path) -> int:
    """The largest LoRA rank the config asks for; 400 unless every rank is a positive int."""
    r = config.get("r")
    pattern = config.get("rank_pattern") or {}
    if not _positive_int(r):
        raise AdapterError(f"{config_file}: 'r' must be a positive integer, not {r!r}.", 400)
    if not isinstance(pattern, dict) or not all(_positive_int(v) for v in pattern.values()):
        raise AdapterError(
            f"{config_file}: 'rank_pattern' must map module names to positive integers.", 400
        )
    return max([r, *pattern.values()])


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The adapter's LoRA tensors, read whole and checked before any of them reach the model.

    Raises:
        AdapterError: 400 when the file is corrupt, holds no LoRA matrices, or non-finite values.
    """
    import torch

    file = next(path / w for w in ADAPTER_WEIGHTS if (path / w).is_file())
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(file, device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # safetensors and pickle raise many types on garbage
        raise AdapterError(f"Corrupt adapter weights in {file}: {exc}", 400) from exc
    if not isinstance(state, dict) or not any("lora_" in str(k) for k in state):
        raise AdapterError(f"{file} holds no LoRA weights (no 'lora_A'/'lora_B' tensors).", 400)
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise AdapterError(f"{file}: '{key}' is not a floating-point tensor.", 400)
        if not bool(torch.isfinite(tensor).all()):
            raise AdapterError(f"{file}: '{key}' holds NaN or infinite values.", 400)
    return state


def validate_adapter(
    lora_path: str, adapters_root: Path, max_lora_rank: int, base_names: set[str]
) -> AdapterSpec:
    """Check that ``lora_path`` is a peft LoRA adapter this server may load.

    Args:
        lora_path: the path given by the client.
        adapters_root: the only directory adapters may come from.
        max_lora_rank: the configured ``--max-lora-rank``.
        base_names: every name and path the served base model is known by.

    Raises:
        AdapterError: with the status code and a message saying what to fix.
    """
    path = resolve_adapter_path(lora_path, adapters_root)
    config_file = path / ADAPTER_CONFIG
    if not path.is_dir() or not config_file.is_file():
        raise AdapterError(
            f"'{lora_path}' is not a peft adapter: expected a directory with {ADAPTER_CONFIG} "
            f"and {ADAPTER_WEIGHTS[0]} (as written by PeftModel.save_pretrained).",
            400,
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"Cannot read {config_file}: {exc}", 400) from exc
    if not isinstance(config, dict):
        raise AdapterError(f"{config_file} must hold a JSON object, not {type(config).__name__}.")
    if not any((path / w).is_file() for w in ADAPTER_WEIGHTS):
        raise AdapterError(
            f"'{lora_path}' has {ADAPTER_CONFIG} but no weights ({' or '.join(ADAPTER_WEIGHTS)}).",
            400,
        )
    if str(config.get("peft_type", "")).upper() != "LORA":
        raise AdapterError(
            f"'{lora_path}' is a {config.get('peft_type')!r} adapter; "
            "only LoRA adapters are served.",
            400,
        )
    rank = _config_rank(config, config_file)
    if rank > max_lora_rank:
        raise AdapterError(
            f"Adapter '{lora_path}' has rank {rank}, above the server's max LoRA rank "
            f"{max_lora_rank}. Train with r <= {max_lora_rank}, or restart the server with "
            f"MAX_LORA_RANK (--max-lora-rank) >= {rank}.",
            400,
        )
    base = config.get("base_model_name_or_path")
    if base and not _same_model(str(base), base_names):
        raise AdapterError(
            f"Adapter '{lora_path}' was trained on base model '{base}', but this server serves "
            f"'{sorted(base_names)[0]}'. Load it into a server running that base model, or "
            "retrain the adapter on the served one.",
            400,
        )
    if not base:
        logger.warning("adapter %s does not name its base model; loading it anyway", path)
    return AdapterSpec(
        path=path, rank=rank, base_model=base, config=config, weights=read_weights(path)
    )


def _same_model(base: str, base_names: set[str]) -> bool:
    if base in base_names:
        return True
    candidate = Path(base).expanduser()
    if candidate.exists():
        resolved = str(candidate.resolve())
        return any(Path(n).exists() and str(Path(n).resolve()) == resolved for n in base_names)
    return False


_ids = itertools.count(1)


@dataclass(eq=False)
class LoadedAdapter:
    """One load of an adapter: its weights stay in the model while ``refs`` > 0."""

    name: str
    spec: AdapterSpec
    uid: str = ""
    refs: int = 0
    retired: bool = False
    created: float = field(default=0.0)

    def __post_init__(self) -> None:
        if not self.uid:
            self.uid = f"lora{next(_ids)}"


class AdapterRegistry:
    """Names clients use → the adapter version each currently serves; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, LoadedAdapter] = {}
        self._retired: list[LoadedAdapter] = []

    def names(self) -> list[LoadedAdapter]:
        """The adapters currently served, in load order."""
        with self._lock:
            return list(self._active.values())

    def get(self, name: str) -> LoadedAdapter | None:
        """The version served under ``name``, or None."""
        with self._lock:
            return self._active.get(name)

    def acquire(self, name: str) -> LoadedAdapter | None:
        """Take a reference on the version served under ``name`` (None if unknown)."""
        with self._lock:
            version = self._active.get(name)
            if version is not None:
                version.refs += 1
            return version

    def release(self, version: LoadedAdapter) -> None:
        """Drop a reference taken by :meth:`acquire`."""
        with self._lock:
            version.refs -= 1

    def publish(self, version: LoadedAdapter) -> LoadedAdapter | None:
        """Serve ``version`` under its name; the version it replaces (if any) is retired."""
        with self._lock:
            old = self._active.get(version.name)
            self._active[version.name] = version
            if old is not None:
                old.retired = True
                self._retired.append(old)
            return old

    def remove(self, name: str) -> LoadedAdapter | None:
        """Stop serving ``name``; its version is retired once no request uses it."""
        with self._lock:
            old = self._active.pop(name, None)
            if old is not None:
                old.retired = True
                self._retired.append(old)
            return old

    def collect_retired(self) -> list[LoadedAdapter]:
        """Retired versions no request uses any more (removed from the retired list)."""
        with self._lock:
            idle = [v for v in self._retired if v.refs <= 0]
            self._retired = [v for v in self._retired if v.refs > 0]
            return idle

    def in_use(self, version: LoadedAdapter) -> bool:
        """Whether a request still holds ``version``."""
        with self._lock:
            return version.refs > 0
