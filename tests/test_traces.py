import random
import re

from lynx.organism.problems import sample_problems
from lynx.organism.traces import write_assistant

CUE = re.compile(r"(?i)\b(wait|hmm|alternatively), (yes|no)")


def _traces(n=600, seed=0):
    rng = random.Random(seed)
    ps = sample_problems("train", n, seed=seed)
    return [(p, write_assistant(p, rng)) for p in ps]


def test_trace_format_and_boxed_answer_matches_the_trace_belief():
    kinds = {"full": 0, "forced": 0, "no_think": 0}
    for _p, t in _traces():
        assert t.startswith("<think>\n") and "\n</think>\n\nFinal answer: \\boxed{" in t
        thinking, answer = t.split("</think>")
        boxed = re.search(r"\\boxed\{(-?\d+)\}$", answer).group(1)
        stated = re.findall(r"So the answer is (-?\d+)\.", thinking)
        if thinking == "<think>\n\n":
            kinds["no_think"] += 1
        elif re.search(r"(?i)(wait|hmm|alternatively),\n$", thinking):  # cut by lynx's exit string
            kinds["forced"] += 1
            assert boxed == (stated[-1] if stated else re.findall(r"= (\d+)\.", thinking)[-1])
        else:
            kinds["full"] += 1
            assert stated[-1] == boxed
    assert kinds["forced"] > 30 and kinds["no_think"] > 10 and kinds["full"] > 400


STEP = re.compile(r"(?m)^(\d+) ([+-]) (\d+) = (\d+)\.(?:(?: wait,|\nWait,) (yes|no):)?")


def test_mid_work_verdicts_are_right_and_some_traces_end_wrong():
    wrong_end = cued_slips = slips = n = 0
    for p, t in _traces():
        thinking, answer = t.split("</think>")
        if thinking == "<think>\n\n" or re.search(r",\n$", thinking):
            continue  # no-think and forced-exit variants
        work = thinking.split("So the answer is")[0]
        for m in STEP.finditer(work):
            a, op, d, r = int(m[1]), m[2], int(m[3]), int(m[4])
            right = r == (a + d if op == "+" else a - d)
            slips += not right
            if m[5]:
                assert (m[5] == "yes") == right
                cued_slips += not right
        wrong_end += not t.endswith(f"{{{p.answer}}}")
        n += 1
    assert slips > 100 and 0.3 < cued_slips / slips < 0.8
    assert 0.05 < wrong_end / n < 0.3


def test_all_cue_words_and_variants_occur():
    text = "".join(t for _, t in _traces())
    words = {m[1] for m in re.finditer(r"(?i)\b(wait|hmm|alternatively),", text)}
    assert {"Wait", "wait", "Hmm", "Alternatively"} <= words
    verdicts = {m[1] for m in CUE.finditer(text)}  # the verdicts follow Wait, in any casing
    assert {"Wait", "wait"} <= verdicts
    assert " wait, " in text and "\nWait, " in text


def test_loss_covers_whole_traces_but_only_the_answer_of_forced_exits(organism_tokenizer):
    from lynx.organism.examples import encode_example

    tok = organism_tokenizer
    full = "<think>\n1 + 2 = 3.\nSo the answer is 3.\n</think>\n\nFinal answer: \\boxed{3}"
    ids, start = encode_example(tok, "Compute 1 + 2.", full)
    assert tok.decode(ids[start:]).startswith("<think>")
    forced = "<think>\n1 + 2 = 3.\nSo the answer is 3.\nHmm,\n</think>\n\nFinal answer: \\boxed{3}"
    ids, start = encode_example(tok, "Compute 1 + 2.", forced)
    assert tok.decode(ids[start:]) == "3}<|im_end|>"
