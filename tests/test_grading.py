from lynx.grading import extract_boxed, grade_integer


def test_extract_last_brace_matched_boxed():
    assert extract_boxed(r"so \boxed{1} then \boxed{\frac{1}{2}} done") == r"\frac{1}{2}"
    assert extract_boxed(r"\boxed{12") is None
    assert extract_boxed("no box") is None
    assert extract_boxed(r"\fbox{7}") == "7"


def test_grade_integer():
    assert grade_integer("56", 56) and grade_integer(" 56 ", "56")
    assert not grade_integer("57", 56) and not grade_integer(None, 1) and not grade_integer("x", 1)
