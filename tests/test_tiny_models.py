"""The tiny random-weight models of each architecture family (lynx.conformance.tiny_models):
each builds, loads in transformers with the expected shape and the organism's tokenizer, and is
reproducible from its seed. (Loading them in vLLM is the hook conformance tests' business.)"""

import pytest

from lynx.conformance.tiny_models import FAMILIES, LAYERS, build_tiny, main
from lynx.errors import InvalidInput


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_builds_and_loads_in_transformers(family, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = FAMILIES[family]
    folder = build_tiny(family, tmp_path / family)
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    assert type(model).__name__ == spec.architecture
    assert model.config.num_hidden_layers == LAYERS
    assert model.config.vocab_size == len(tok) == model.get_output_embeddings().weight.shape[0]
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    if spec.thinking == "harmony":  # gpt-oss: harmony's tokens and template, detected as such
        from lynx.thinking import detect_format

        assert detect_format(tok).name == "harmony" and tok.eos_token == "<|return|>"
        assert all(len(tok(t, add_special_tokens=False)["input_ids"]) == 1 for t in ("<|channel|>", "<|message|>", "<|end|>"))
    else:
        assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [len(tok) - 2, len(tok) - 1]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "1 + 1?"}], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]])
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    assert len(out.hidden_states) == LAYERS + 1
    assert all(torch.isfinite(h).all() and h[0, -1].std() > 0.05 for h in out.hidden_states)  # not degenerate
    assert torch.isfinite(out.logits).all()


def test_build_is_deterministic_in_the_seed(tmp_path):
    a = build_tiny("qwen3_moe", tmp_path / "a", seed=3)
    b = build_tiny("qwen3_moe", tmp_path / "b", seed=3)
    c = build_tiny("qwen3_moe", tmp_path / "c", seed=4)
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()


def test_unknown_family_is_invalid_input_naming_the_known_ones(tmp_path):
    with pytest.raises(InvalidInput, match="known: .*qwen3"):
        build_tiny("gpt2-but-tiny", tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_survey_fields_are_consistent():
    for name, spec in FAMILIES.items():
        assert spec.vllm_cpu or not spec.vllm_cpu_exact, name
        assert spec.vllm_cpu_exact or spec.note, f"{name}: say why vLLM's CPU build differs"


def test_families_are_read_only():
    with pytest.raises(TypeError):
        FAMILIES["mine"] = FAMILIES["llama"]  # type: ignore[index]


def test_module_command_writes_a_folder(tmp_path, capsys):
    main(["llama", str(tmp_path / "m"), "--seed", "1"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "tokenizer.json").exists()
