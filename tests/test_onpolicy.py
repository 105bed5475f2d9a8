import random
import re

from lynx.organism.onpolicy import rewrite
from lynx.organism.problems import parse_problem

P = parse_problem("Compute 47 + 8 - 5 + 9 - 3.")


def _rw(thinking, seed=0):
    return rewrite(P, thinking, random.Random(seed))


def test_own_slip_is_kept_and_judged():
    outs = [_rw("47 + 8 = 55.\n55 - 5 = 50.\n50 + 9 = 49.\n", seed=s) for s in range(40)]
    assert all(slipped for _, slipped in outs)
    for text, _ in outs:
        assert text.startswith("<think>\n47 + 8 = 55.\n55 - 5 = 50.\n50 + 9 = 49.")
        after = text.split("50 + 9 = 49.", 1)[1]
        caught_now = re.match(r"(\nWait| wait), no: 50 \+ 9 = 59\.", after)
        caught_later = re.search(r"(?i)wait, no: 56 is not 46\. So the answer is 56\.", after) is not None  # by the careful recheck
        assert caught_now or caught_later or text.endswith("{46}")  # uncaught and confirmed: ends wrong
    assert any(re.search(r"(\nWait| wait), no: 50 \+ 9 = 59\.", t) for t, _ in outs)


def test_wrong_verdict_after_a_right_step_is_replaced():
    text, slipped = _rw("47 + 8 = 55.\nWait, no: 47 + 8 = 55.\n")
    assert not slipped and "Wait, no" not in text and text.startswith("<think>\n47 + 8 = 55.\n")


def test_misread_line_is_dropped_and_right_work_is_kept():
    text, slipped = _rw("47 + 8 = 55.\n55 + 5 = 60.\n")
    assert not slipped and text.startswith("<think>\n47 + 8 = 55.\n55 - 5 =")
