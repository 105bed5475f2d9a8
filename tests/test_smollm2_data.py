"""SmolLM2-reasoner's data: word problems with disjoint splits, and R1-style traces in prose
whose cues come in the spellings a BPE tokenizer sees (no model is loaded here)."""

import random
import re

import pytest

from lynx.errors import InvalidInput
from lynx.organism.problems import bucket_of
from lynx.smollm2.problems import SPLITS, sample_problems
from lynx.smollm2.traces import write_assistant, write_thinking


def test_splits_are_disjoint_by_hash_and_reproducible():
    seen = {}
    for split in SPLITS:
        problems = sample_problems(split, 200, seed=3)
        assert len({p.text for p in problems}) == 200
        assert [p.text for p in problems] == [p.text for p in sample_problems(split, 200, seed=3)]
        assert sample_problems(split, 5, seed=4) != problems[:5]
        seen[split] = {p.text for p in problems}
    assert not seen["train"] & (seen["calibration"] | seen["test"] | seen["transfer"])
    assert not seen["calibration"] & (seen["test"] | seen["transfer"])
    assert all(bucket_of(t) < 80 for t in seen["train"]) and all(80 <= bucket_of(t) < 90 for t in seen["calibration"])
    with pytest.raises(InvalidInput):
        sample_problems("dev", 1)


def test_problems_are_stories_whose_answer_is_the_chain():
    for p in sample_problems("test", 100):
        assert p.text.startswith(p.name) and p.text.endswith(f"How many {p.item} does {p.name} have now?")
        assert 3 <= len(p.ops) <= 5 and p.packs is None
        value = p.start
        for op, d, _ in p.ops:
            value = value + d if op == "+" else value - d
            assert 0 <= value <= 99
        assert value == p.answer
        assert p.to_record() == {"id": p.problem_id, "problem": p.text, "answer": str(p.answer)}


def test_transfer_problems_are_another_kind():
    """The transfer split starts from a product the reasoner never saw in training."""
    transfer = sample_problems("transfer", 50)
    assert all(p.packs is not None and p.start == p.packs[0] * p.packs[1] and "packs of" in p.text for p in transfer)
    assert not any("packs of" in p.text for p in sample_problems("train", 500))


def test_traces_think_with_cues_in_several_spellings_and_end_with_the_boxed_answer():
    rng = random.Random(0)
    problems = sample_problems("train", 400)
    texts = [write_assistant(p, rng) for p in problems]
    full = [t for t in texts if "</think>\n\nFinal answer: \\boxed{" in t and t.rstrip().endswith("}")]
    assert len(full) > 300  # the others are forced exits
    cues = [len(re.findall(r"(?i)\b(?:wait|hmm|alternatively),", t)) for t in full]
    assert sum(cues) / len(cues) >= 1.5
    joined = "".join(texts)
    for spelling in ("\nWait,", " Wait,", " wait,", "\nHmm,", "\nAlternatively,"):
        assert spelling in joined, spelling
    # a slip on a carry step is followed by "Wait, no:" with the right value, in some traces
    assert re.search(r"(?:\nWait,| Wait,| wait,) no: \d+ [+-] \d = \d+\.", joined)


def test_final_answers_are_mostly_right_and_sometimes_wrong():
    """The script's final answer is wrong when a slip survives (a hasty recheck), so forced and
    full exits carry both labels."""
    rng = random.Random(1)
    problems = sample_problems("train", 600)
    right = [write_thinking(p, rng)[1] == p.answer for p in problems]
    assert 0.75 < sum(right) / len(right) < 0.995


def test_every_line_of_work_is_ones_then_tens_and_its_arithmetic_is_right_or_a_forgotten_carry():
    """The v3 decomposition a 135M model learns from: each numbered step works the ones digit,
    then the tens digit (lowered or raised exactly when the ones cross 10), then the result; the
    only wrong result the script writes is the forgotten carry, with the tens left unchanged."""
    line = re.compile(r"^(\d+)\. .*: (\d+) ([+-]) (\d): ones (\d+) ([+-]) (\d) = (\d+), tens (\d+)(?: ([+-]) 1 = (\d+))?, so (\d+)\.", re.M)
    rng = random.Random(2)
    seen = {"carry": 0, "plain": 0, "slip": 0}
    for p in sample_problems("train", 300):
        thinking, _ = write_thinking(p, rng)
        numbers = []
        for m in line.finditer(thinking):
            k, before, op, d, top, op2, d2, ones, tens, op3, tens_after, result = m.groups()
            before, d, top, ones, tens, result = int(before), int(d), int(top), int(ones), int(tens), int(result)
            numbers.append(int(k))
            assert op == op2 and d == int(d2) and tens == before // 10
            assert ones == (top + d if op == "+" else top - d)
            carries = before % 10 + d >= 10 if op == "+" else before % 10 < d
            assert top == (before % 10 + 10 if op == "-" and carries else before % 10)
            right = before + d if op == "+" else before - d
            if op3 is not None:
                assert carries and op3 == op and int(tens_after) == (tens + 1 if op == "+" else tens - 1) and result == right
                seen["carry"] += 1
            elif carries:
                assert result == (right - 10 if op == "+" else right + 10)  # the forgotten carry
                seen["slip"] += 1
            else:
                assert result == right
                seen["plain"] += 1
        assert numbers == list(range(1, len(p.ops) + 1))  # every step, numbered, in order
    assert min(seen.values()) > 0 and seen["slip"] < 0.15 * (seen["carry"] + seen["slip"])


def test_the_model_card_states_the_rates_its_adapter_learned_not_todays_recipe():
    """The card reads the recheck rates from the adapter's finetune.json (what it was trained on); a
    record from before lynx wrote them is refused in one line, not rendered with today's rates."""
    import json

    from lynx.smollm2.card import render_card
    from lynx.smollm2.reasoner import ADAPTER_DIR

    figs = json.loads((ADAPTER_DIR / "figures.json").read_text())
    record = json.loads((ADAPTER_DIR / "finetune.json").read_text())
    card = render_card(figs, figs["command"], record)
    assert f"{record['trace_style']['first_check']:.0%} of stated answers" in card
    other = {**record, "trace_style": {**record["trace_style"], "first_check": 0.5, "second_check": 0.4}}
    card = render_card(figs, figs["command"], other)
    assert "50% of stated answers" in card and "another recheck 40%" in card
    with pytest.raises(InvalidInput, match="does not record its trace rates"):
        render_card(figs, figs["command"], {k: v for k, v in record.items() if k != "trace_style"})
