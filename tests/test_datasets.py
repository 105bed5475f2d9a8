import pytest

from lynx.datasets import load


def test_organism_splits_load_with_gold_answers():
    for split in ("train", "calibration", "test", "transfer"):
        recs = load(f"organism:{split}:25")
        assert len(recs) == 25 and all(r.kind == "integer" and r.answer.lstrip("-").isdigit() for r in recs)
    assert len(load("organism:test")) == 500
    assert {r.id for r in load("organism:test:50")}.isdisjoint({r.id for r in load("organism:calibration:500")})


def test_bad_dataset_specs_are_clear():
    with pytest.raises(ValueError, match="unknown organism split 'dev'"):
        load("organism:dev")
    with pytest.raises(ValueError, match="must be an integer"):
        load("organism:test:many")
    with pytest.raises(ValueError, match="unknown dataset"):
        load("gsm9k")
    with pytest.raises(FileNotFoundError, match="dataset file not found: /nowhere/x.jsonl"):
        load("/nowhere/x.jsonl")


BENCHMARKS = {
    "gsm8k/test.jsonl": (1319, "math"),
    "math500/test.jsonl": (500, "math"),
    "aime24/test.jsonl": (30, "math"),
    "aime25/test.jsonl": (30, "math"),
    "amc23/test.jsonl": (40, "math"),
    "olympiadbench/test.jsonl": (675, "math"),
    "gpqa_diamond/test.jsonl": (198, "choice"),
    "commonsenseqa/validation.jsonl": (1221, "choice"),
}


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_every_shared_benchmark_loads(name):
    from conftest import SHARED

    n, kind = BENCHMARKS[name]
    recs = load(str(SHARED / "benchmarks" / name))
    assert len(recs) == n
    assert all(r.question and r.answer for r in recs)
    assert {r.kind for r in recs} == {kind}
    if kind == "choice":
        assert {r.answer for r in recs} <= set("ABCDE")
        assert all("\nA. " in r.question or "A." in r.question for r in recs)


def test_amc_float_answers_become_integers():
    from conftest import SHARED

    recs = load(str(SHARED / "benchmarks" / "amc23" / "test.jsonl"))
    assert all(not r.answer.endswith(".0") for r in recs)


def test_local_file_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "1+1", "answer": "2"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load(str(bad))
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"q": "1+1", "a": "2"}\n')
    with pytest.raises(ValueError, match="no question field"):
        load(str(odd))
    assert load(str(odd), question_field="q", answer_field="a")[0].answer == "2"


def test_hub_specs_name_config_and_split():
    from lynx.datasets import HUB_SPEC, hub_parts

    def parts(s):
        return hub_parts(HUB_SPEC.fullmatch(s), "test")

    assert parts("HuggingFaceH4/MATH-500") == ("HuggingFaceH4/MATH-500", None, "test")
    assert parts("openai/gsm8k:main:test") == ("openai/gsm8k", "main", "test")
    assert parts("DigitalLearningGmbH/MATH-lighteval:train[3000:4000]") == ("DigitalLearningGmbH/MATH-lighteval", None, "train[3000:4000]")


def test_worked_answers_give_their_final_answer():
    from lynx.datasets import to_record

    assert to_record({"question": "q", "answer": "48/2 = 24\n#### 1,024"}, 0).answer == "1024"
    assert to_record({"problem": "q", "solution": "so it is \\boxed{\\frac{1}{2}}."}, 0, answer_field="solution").answer == "\\frac{1}{2}"
