"""The reasoning fine-tune is deterministic from its seed and resumes after a kill to the very
same adapter (a tiny Llama with SmolLM2's tokenizer stands in for the 135M base: same code path)."""

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_base(smollm2_base, tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_base)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _adapter(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter" / "adapter_model.safetensors"))


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tiny_base, tmp_path, monkeypatch):
    import dataclasses

    import lynx.smollm2.traces
    from lynx.errors import InvalidInput
    from lynx.smollm2.finetune import HISTORY_FILE, RECORD_FILE, FinetuneConfig, finetune

    cfg = FinetuneConfig(n_problems=12, batch_size=3, save_every=3, rank=2, lora_alpha=4, warmup_steps=1)
    whole = finetune(tmp_path / "whole", cfg, base=tiny_base, log=lambda m: None)
    assert whole is not None
    assert finetune(tmp_path / "cut", cfg, base=tiny_base, log=lambda m: None, stop_after=2) is None  # "killed" after step 2
    assert json.loads((tmp_path / "cut" / "state" / "state.json").read_text())["step"] == 2
    resumed = finetune(tmp_path / "cut", cfg, base=tiny_base, log=lambda m: None)
    assert resumed is not None
    a, b = _adapter(tmp_path / "whole"), _adapter(tmp_path / "cut")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / HISTORY_FILE).read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # each step written once, across the two sittings
    # another seed trains another adapter; another config in the same folder is refused
    other = FinetuneConfig(n_problems=12, batch_size=3, save_every=3, rank=2, lora_alpha=4, warmup_steps=1, seed=1)
    finetune(tmp_path / "seed1", other, base=tiny_base, log=lambda m: None)
    assert any(not bool((a[k] == _adapter(tmp_path / "seed1")[k]).all()) for k in a)
    with pytest.raises(InvalidInput):
        finetune(tmp_path / "cut", other, base=tiny_base, log=lambda m: None, stop_after=1)
    # the record says which trace rates the adapter learned (the model card states them from it) ...
    record = json.loads((tmp_path / "cut" / RECORD_FILE).read_text())
    assert record["trace_style"] == lynx.smollm2.traces.STYLE.rates() and record["trace_style"]["first_check"] == lynx.smollm2.traces.STYLE.first_check
    # ... and a run whose traces changed under it (a new recipe) is not resumed into a mixed adapter
    cut2 = tmp_path / "cut2"
    assert finetune(cut2, cfg, base=tiny_base, log=lambda m: None, stop_after=1) is None
    monkeypatch.setattr(lynx.smollm2.traces, "STYLE", dataclasses.replace(lynx.smollm2.traces.STYLE, first_check=0.2, second_check=0.1))
    with pytest.raises(InvalidInput, match="trace recipe changed"):
        finetune(cut2, cfg, base=tiny_base, log=lambda m: None)
