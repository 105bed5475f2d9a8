from lynx.grading import extract_boxed, grade_integer


def test_extract_last_brace_matched_boxed():
    assert extract_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{12") is None
    assert extract_boxed("no box") is None
    assert extract_boxed(r"\fbox{7}") == "7"


def test_grade_integer():
    assert grade_integer("56", 56) and grade_integer(" 56 ", "56")
    assert not grade_integer("57", 56) and not grade_integer(None, 1) and not grade_integer("x", 1)


def test_math_equivalence_and_choice():
    from lynx.grading import grade_choice, grade_math

    assert grade_math(r"\frac{1}{2}", "0.5") and grade_math(r"\dfrac{3}{4}", r"\frac34")
    assert not grade_math("3", "4") and not grade_math(None, "1")
    assert grade_choice("B", "B") and grade_choice(r"\text{(C)}", "C") and not grade_choice("A", "D")


def test_math500_reference_solutions_grade_as_their_answers(capsys):
    """Agreement of boxed-extraction + math-verify with MATH-500's own answers (expect >= 98%)."""
    import json

    from conftest import SHARED

    from lynx.grading import grade_math

    rows = [json.loads(line) for line in (SHARED / "benchmarks/math500/test.jsonl").read_text().split("\n") if line.strip()]
    disagree = [(r["unique_id"], extract_boxed(r["solution"]), r["answer"]) for r in rows if not grade_math(extract_boxed(r["solution"]), r["answer"])]
    agreement = 1 - len(disagree) / len(rows)
    with capsys.disabled():
        print(f"\nMATH-500 solution-vs-answer agreement: {agreement:.3f} ({len(rows) - len(disagree)}/{len(rows)})")
        for uid, pred, gold in disagree:
            print(f"  disagree {uid}: boxed={pred!r} answer={gold!r}")
    assert agreement >= 0.98
