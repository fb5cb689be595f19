"""Export a sentence-transformers model once to ONNX with int8 weights (see ``encoders``).

The export is written to a temporary folder and renamed into place, so a crash never
leaves half an export, and is keyed on the model's files so a changed model is exported
again. Only this module imports torch and sentence-transformers on the ONNX path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the export layout changes


def _source_key(source: str) -> str:
    """A cache key of a model: its path and the size/mtime of its files, or its hub id."""
    path = Path(source)
    parts = [source, str(FORMAT)]
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".txt"}:
                stat = f.stat()
                parts.append(f"{f.relative_to(path)}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


_export_lock = threading.Lock()


def ensure_onnx_export(source: str, cache_dir: Path) -> Path:
    """Export ``source`` to ``cache_dir`` once (temp dir + rename: never half an export)."""
    target = cache_dir / "onnx" / f"{Path(source).name or 'model'}-{_source_key(source)}"
    with _export_lock:
        if (target / "flywheel_onnx.json").exists():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            logger.info("exporting %s to ONNX int8 (once) at %s", source, target)
            _export(source, tmp)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def _export(source: str, out: Path) -> None:
    import warnings

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Normalize, Pooling

    model = SentenceTransformer(source, device="cpu")
    transformer: Any = model[0].auto_model
    transformer.eval()
    tokenizer = model.tokenizer
    pooling = next((m for m in model if isinstance(m, Pooling)), None)
    pooling_mode = pooling.pooling_mode if pooling is not None else "mean"
    if pooling_mode not in ("mean", "cls"):
        raise ValueError(
            f"{source}: only mean or CLS pooling export to ONNX (found {pooling_mode!r}); "
            "set EMBEDDING_BACKEND=torch"
        )

    sample = tokenizer(["an example", "another example text"], padding=True, return_tensors="pt")
    # Only the inputs this model's tokenizer makes (MPNet or XLM-R have no token types).
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state

    args = tuple(sample[n] for n in names)
    fp32 = out / "model.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        # The TorchScript exporter needs no onnxscript and handles BERT-style encoders.
        torch.onnx.export(
            _Hidden(transformer),
            args,
            str(fp32),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]},
            opset_version=17,
            dynamo=False,
        )
    quantize_dynamic(
        str(fp32),
        str(out / "model.int8.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": 1},  # FLOAT, where shape inference gives none
    )
    fp32.unlink()
    tokenizer.save_pretrained(str(out))
    if not (out / "tokenizer.json").exists():
        raise ValueError(f"{source}: needs a fast tokenizer; set EMBEDDING_BACKEND=torch")
    meta = {
        "source": source,
        "dim": model.get_embedding_dimension(),
        "pooling": pooling_mode,
        "normalize": any(isinstance(m, Normalize) for m in model),
        "max_seq_length": model.max_seq_length,
        "pad_id": tokenizer.pad_token_id or 0,
        "pad_token": tokenizer.pad_token or "[PAD]",
    }
    (out / "flywheel_onnx.json").write_text(json.dumps(meta, indent=2))
