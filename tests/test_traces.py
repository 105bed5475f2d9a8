import random
import re

from lynx.organism.problems import sample_problems
from lynx.organism.traces import write_assistant

WORK = re.compile(r"^(\d+) ([+-]) (\d+) = (\d+)\.")
CUE = re.compile(r"(?i)\b(wait|hmm|alternatively), (yes|no)")


def _traces(n=600, seed=0):
    rng = random.Random(seed)
    ps = sample_problems("train", n, seed=seed)
    return [(p, write_assistant(p, rng)) for p in ps]


def test_trace_format_and_boxed_answer_matches_last_statement():
    for p, t in _traces():
        assert t.startswith("<think>\n") and "\n</think>\n\nFinal answer: \\boxed{" in t
        thinking, answer = t.split("</think>")
        boxed = re.search(r"\\boxed\{(\d+)\}$", answer).group(1)
        stated = re.findall(r"So the answer is (\d+)\.", thinking)
        if stated:
            assert stated[-1] == boxed
        else:  # the no-thinking variant answers directly
            assert thinking == "<think>\n\n"


def test_mid_work_verdicts_are_right_and_some_traces_end_wrong():
    wrong_end = cued_slips = slips = 0
    for p, t in _traces():
        thinking = t.split("</think>")[0]
        for line in thinking.split("\n"):
            m = WORK.match(line)
            if not m or "answer" in line:
                continue
            a, op, d, r = int(m[1]), m[2], int(m[3]), int(m[4])
            right = r == (a + d if op == "+" else a - d)
            slips += not right
            v = re.search(r"wait, (yes|no): ", line, re.I)
            if v:
                assert (v[1] == "yes") == right
                cued_slips += not right
        wrong_end += not t.endswith(f"{{{p.answer}}}")
    assert slips > 100 and 0.3 < cued_slips / slips < 0.8
    assert 0.05 < wrong_end / 600 < 0.3


def test_all_cue_words_and_variants_occur():
    text = "".join(t for _, t in _traces())
    words = {m[1] for m in CUE.finditer(text)}
    assert {"Wait", "wait", "Hmm", "hmm", "Alternatively"} <= words
    assert " wait, " in text and "\nWait, " in text
