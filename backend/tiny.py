"""Tiny models built locally, deterministically, for demos and tests: never downloaded.

No model hub is reachable from CI or a laptop without network, yet every code path
(generation, LoRA training, reranking, BGE-M3 encoding) must run for real. So we build
small random-weight models from configs with a fixed seed:

* ``chat``: a 2-layer Qwen2-style causal LM with a byte-level BPE tokenizer (exact text
  round trip) and a ChatML chat template; loadable with ``AutoModelForCausalLM`` and
  trainable with peft.
* ``reranker``: a tiny BERT cross-encoder that FlagEmbedding's ``FlagReranker`` loads.
* ``m3``: a tiny BERT encoder with the BGE-M3 sparse and ColBERT heads beside it, loadable
  by FlagEmbedding with ``model_class="encoder-only-m3"``.

Usage: ``python -m backend.tiny PATH [--kind chat|reranker|m3]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

logger = logging.getLogger(__name__)

SEED = 0
Kind = Literal["chat", "reranker", "m3"]
KINDS: tuple[Kind, ...] = ("chat", "reranker", "m3")
# Bumped whenever a builder changes, so cached copies are rebuilt instead of reused.
TINY_VERSION = 1
_MARKER = "tiny_model.json"

BOS, EOS, IM_START, IM_END = "<|endoftext|>", "<|im_end|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

# The ChatML template Qwen2.5 uses, minus tool calls: the tiny model is a stand-in for it.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Text the tiny BPE learns its merges from: the words a RAG chat actually uses, so
# prompts stay a few hundred tokens long rather than one token per byte.
_CORPUS = """
You are a helpful assistant. Answer the question using only the numbered sources below.
Cite the sources you use with their numbers in square brackets, like [1] or [2][3].
If the sources do not contain the answer, say that the answer is not in the documents.
Sources: [1] [2] [3] [4] [5] Memories about the user: Question: Answer: Document title page.
The user said they are vegetarian. My project is written in Rust. I live in Berlin.
What is the capital of France? The capital of France is Paris [1]. Thank you! Hello, hi.
Retrieval augmented generation combines a search over documents with a language model.
The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 100 2024 2025 2026.
The study found that the treatment reduced the risk of disease in patients with cancer,
cells, protein, gene expression, results, methods, and conclusions were reported here.
{"memory": [{"text": "..."}], "score": 5, "groundedness": 4, "helpfulness": 3}
"""


def _build_chat(path: Path) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Train with exactly the normalizer and pre-tokenizer Qwen2Tokenizer rebuilds on load,
    # so ids survive a save / AutoTokenizer reload (the transformers 5 trap in STACK.md).
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=768,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([_CORPUS] * 4, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = trained["merges"]
    tokenizer = Qwen2Tokenizer(
        vocab=trained["vocab"],
        merges=[tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges],  # type: ignore[misc]
        bos_token=None,
        eos_token=EOS,
        pad_token=BOS,
        unk_token=None,  # type: ignore[arg-type]  # byte-level BPE never needs one
        model_max_length=4096,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(path)

    bos_id, eos_id = (int(tokenizer.convert_tokens_to_ids(t)) for t in (BOS, EOS))  # type: ignore[arg-type]
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=bos_id,
    )
    torch.manual_seed(SEED)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = config.eos_token_id
    model.generation_config.pad_token_id = config.pad_token_id
    model.save_pretrained(path)


def _wordpiece_vocab() -> list[str]:
    words = sorted({w.strip(".,?!:;()[]{}\"'").lower() for w in _CORPUS.split()} - {""})
    chars = [c for c in string.printable if not c.isspace()]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return specials + chars + [f"##{c}" for c in chars] + [w for w in words if w not in chars]


def _bert_base(path: Path) -> tuple[object, object]:
    from transformers import BertConfig, BertTokenizerFast  # type: ignore[attr-defined]

    path.mkdir(parents=True, exist_ok=True)
    vocab_file = path / "vocab.txt"
    vocab_file.write_text("\n".join(_wordpiece_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
    )
    return tokenizer, config


def _build_reranker(path: Path) -> None:
    import torch
    from transformers import BertForSequenceClassification

    _, config = _bert_base(path)
    config.num_labels = 1  # type: ignore[attr-defined]
    torch.manual_seed(SEED)
    BertForSequenceClassification(config).save_pretrained(path)  # type: ignore[arg-type]


def _build_m3(path: Path) -> None:
    import torch
    from transformers import BertModel

    _, config = _bert_base(path)
    torch.manual_seed(SEED)
    model = BertModel(config)  # type: ignore[arg-type]
    model.save_pretrained(path)
    hidden = model.config.hidden_size
    # FlagEmbedding's M3 reads these heads from beside the weights; without them they
    # would be random on every load, so sparse weights would change between processes.
    torch.save(torch.nn.Linear(hidden, hidden).state_dict(), path / "colbert_linear.pt")
    sparse = torch.nn.Linear(hidden, 1)
    with torch.no_grad():
        sparse.bias.fill_(0.5)  # relu(.) of a random head is often 0 for every token
    torch.save(sparse.state_dict(), path / "sparse_linear.pt")


_BUILDERS: dict[Kind, Callable[[Path], None]] = {
    "chat": _build_chat,
    "reranker": _build_reranker,
    "m3": _build_m3,
}


def build(path: Path | str, kind: Kind = "chat") -> Path:
    """Build the tiny ``kind`` model into ``path`` (replacing what is there) and return it.

    The model is written to a temporary sibling directory and renamed into place, so a
    crash never leaves half a model that a later run would mistake for a cached one.
    """
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {KINDS}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        _BUILDERS[kind](tmp)
        marker = {"kind": kind, "version": TINY_VERSION, "seed": SEED}
        (tmp / _MARKER).write_text(json.dumps(marker))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("built tiny %s model at %s", kind, target)
    return target


def is_built(path: Path, kind: Kind) -> bool:
    """Whether ``path`` holds a complete tiny ``kind`` model of the current version."""
    try:
        meta = json.loads((path / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return bool(meta.get("kind") == kind and meta.get("version") == TINY_VERSION)


def ensure(models_dir: Path | str, kind: Kind = "chat") -> Path:
    """Return the cached tiny ``kind`` model under ``models_dir``, building it if missing."""
    path = Path(models_dir) / f"tiny-{kind}"
    if not is_built(path, kind):
        build(path, kind)
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: build a tiny model into PATH."""
    parser = argparse.ArgumentParser(prog="python -m backend.tiny", description=__doc__)
    parser.add_argument("path", type=Path, help="directory to write the model to")
    parser.add_argument("--kind", choices=KINDS, default="chat", help="which tiny model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = build(args.path, args.kind)
    logger.info("done: load it with --model %s", out)


if __name__ == "__main__":
    main()
