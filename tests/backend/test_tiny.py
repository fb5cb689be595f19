"""The tiny local models: deterministic, loadable by the stock loaders, trainable with peft."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from backend import tiny


def test_chat_model_build_is_deterministic(tmp_path: Path, tiny_chat_model: Path) -> None:
    again = tiny.build(tmp_path / "again", "chat")
    first = load_file(tiny_chat_model / "model.safetensors")
    second = load_file(again / "model.safetensors")
    assert first.keys() == second.keys()
    assert all(first[name].equal(second[name]) for name in first)
    tokenizer_json = (tiny_chat_model / "tokenizer.json").read_text()
    assert (again / "tokenizer.json").read_text() == tokenizer_json


def test_ensure_reuses_a_built_model_and_rebuilds_a_broken_one(tmp_path: Path) -> None:
    path = tiny.ensure(tmp_path, "reranker")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert tiny.ensure(tmp_path, "reranker") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    (path / "tiny_model.json").unlink()  # as if a crash interrupted an older build
    tiny.ensure(tmp_path, "reranker")
    assert tiny.is_built(path, "reranker")


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown tiny model kind"):
        tiny.build(tmp_path / "x", "giant")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text",
    [
        "The capital of France is Paris [1].",
        "  leading spaces, tabs\tand\nnewlines  ",
        "Unicode: Grüße, 東京, emoji 🚀, math ∑x²",
        '{"memory": [{"text": "I am vegetarian"}]}',
    ],
)
def test_tokenizer_round_trips_text_after_save_and_reload(
    tiny_chat_model: Path, tmp_path: Path, text: str
) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    tok.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert reloaded(text, add_special_tokens=False)["input_ids"] == ids


def test_chat_template_renders_chatml(tiny_chat_model: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    messages = [{"role": "user", "content": "Hello"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nHello<|im_end|>\n" in text
    assert text.endswith("<|im_start|>assistant\n")
    # The end-of-turn marker is a single special token, so generation can stop on it.
    assert len(tok("<|im_end|>", add_special_tokens=False)["input_ids"]) == 1
    assert tok.eos_token == "<|im_end|>"


def test_generate_produces_new_tokens(tiny_chat_model: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    enc = tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        tokenize=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**enc, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_lora_trains_one_step_saves_and_reloads(tiny_chat_model: Path, tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_chat_model)
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    model = get_peft_model(
        base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    )
    batch = tok(["[1] The capital of France is Paris."], return_tensors="pt")
    lora_b = {n: p.clone() for n, p in model.named_parameters() if "lora_B" in n}
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = model(**batch, labels=batch["input_ids"]).loss
    loss.backward()
    optim.step()
    changed = [n for n, p in model.named_parameters() if "lora_B" in n and not p.equal(lora_b[n])]
    assert changed, "one optimiser step should move the LoRA weights"
    after = {
        k.replace(".base_layer", ""): v
        for k, v in model.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert after.keys() == before.keys()
    assert all(before[k].equal(after[k]) for k in before), "base weights must stay frozen"

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    reloaded = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_chat_model), tmp_path / "adapter"
    )
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, reloaded(**batch).logits, atol=1e-5)


@pytest.mark.slow
def test_flagembedding_loads_the_tiny_reranker(tiny_reranker_model: Path) -> None:
    from FlagEmbedding import FlagReranker

    reranker = FlagReranker(str(tiny_reranker_model), use_fp16=False, devices="cpu")
    scores = reranker.compute_score(
        [["what is paris", "Paris is the capital of France"], ["what is paris", "gene expression"]]
    )
    assert len(scores) == 2
    assert all(isinstance(s, float) for s in scores)
    assert scores[0] != scores[1]


@pytest.mark.slow
def test_flagembedding_loads_the_tiny_m3_with_stable_sparse_weights(tiny_m3_model: Path) -> None:
    from FlagEmbedding import BGEM3FlagModel

    def encode() -> dict:
        model = BGEM3FlagModel(str(tiny_m3_model), use_fp16=False, devices="cpu")
        return model.encode(
            ["the capital of france is paris"], return_dense=True, return_sparse=True
        )

    first, second = encode(), encode()
    assert first["dense_vecs"].shape == (1, 32)
    weights = first["lexical_weights"][0]
    assert weights, "the sparse head should give some token a positive weight"
    # The heads are read from disk, so a second load gives the same sparse weights.
    assert weights == second["lexical_weights"][0]
