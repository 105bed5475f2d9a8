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
        caught_later = "no: the answer is 56." in after
        assert caught_now or caught_later or text.endswith("{46}")  # uncaught and confirmed: ends wrong
    assert any(re.search(r"(\nWait| wait), no: 50 \+ 9 = 59\.", t) for t, _ in outs)


def test_wrong_verdict_after_a_right_step_is_replaced():
    text, slipped = _rw("47 + 8 = 55.\nWait, no: 47 + 8 = 55.\n")
    assert not slipped and "Wait, no" not in text and text.startswith("<think>\n47 + 8 = 55.\n")


def test_misread_line_is_kept_and_corrected_at_once():
    for seed in range(20):
        text, slipped = _rw("47 + 8 = 55.\n55 + 5 = 60.\n", seed=seed)
        assert slipped and text.startswith("<think>\n47 + 8 = 55.\n55 + 5 = 60.")
        assert re.match(r"(\nWait| wait), no: 55 - 5 = 50\.\n", text.split("55 + 5 = 60.", 1)[1])
