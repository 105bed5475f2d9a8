import pytest

from lynx.models import ModelNotFound, resolve_model


def test_resolution_rules(tmp_path):
    assert resolve_model("organism").is_organism
    assert resolve_model("Qwen/Qwen3-1.7B").path == "Qwen/Qwen3-1.7B"
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model(str(tmp_path)).path == str(tmp_path.resolve())


def test_bad_model_names_are_clear_errors(tmp_path):
    with pytest.raises(ModelNotFound, match="unknown model 'nonsense'"):
        resolve_model("nonsense")
    with pytest.raises(ModelNotFound, match="no config.json"):
        resolve_model(str(tmp_path))
