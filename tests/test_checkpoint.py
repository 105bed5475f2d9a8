"""The shipped organism checkpoint is what its record says it is."""

import json

from lynx.models import ORGANISM_DIR, model_fingerprint, resolve_model
from lynx.organism.train import sha256_file


def test_checkpoint_matches_recorded_hashes_and_size():
    record = json.loads((ORGANISM_DIR / "organism.json").read_text())
    for name, digest in record["sha256"].items():
        assert sha256_file(ORGANISM_DIR / name) == digest, f"{name} differs from organism.json"
    total = sum(f.stat().st_size for f in ORGANISM_DIR.iterdir())
    assert total <= 25 * 2**20


def test_checkpoint_config_is_the_recorded_qwen3():
    record = json.loads((ORGANISM_DIR / "organism.json").read_text())
    cfg = json.loads((ORGANISM_DIR / "config.json").read_text())
    train = record["train_config"]
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert cfg["head_dim"] == train["head_dim"] == 64  # a head size vLLM's CPU attention supports
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"]) == (train["hidden_size"], train["num_layers"], train["intermediate_size"])


def test_fingerprint_is_stable_and_names_the_weights():
    ref = resolve_model("organism")
    assert model_fingerprint(ref) == model_fingerprint(resolve_model("organism"))
    assert len(model_fingerprint(ref)) == 16


def test_chat_template_has_a_thinking_switch(organism_tokenizer):
    msgs = [{"role": "user", "content": "Compute 1 + 2."}]
    on = organism_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    off = organism_tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on.endswith("<|im_start|>assistant\n") and off.endswith("<think>\n\n</think>\n\n")
