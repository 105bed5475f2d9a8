import pytest

from lynx.organism.problems import MAIN_STEPS, TRANSFER_STEPS, bucket_of, parse_problem, sample_problems


def test_splits_are_disjoint_and_follow_their_buckets():
    texts = {s: {p.text for p in sample_problems(s, 1500, seed=3)} for s in ("train", "calibration", "test", "transfer")}
    assert not texts["train"] & texts["calibration"]
    assert not texts["train"] & texts["test"]
    assert not texts["calibration"] & texts["test"]
    assert not texts["test"] & texts["transfer"]
    assert all(bucket_of(t) < 80 for t in texts["train"])
    assert all(80 <= bucket_of(t) < 90 for t in texts["calibration"])
    assert all(bucket_of(t) >= 90 for t in texts["test"] | texts["transfer"])


def test_sampling_is_reproducible_and_seed_dependent():
    a = [p.text for p in sample_problems("test", 50, seed=1)]
    assert a == [p.text for p in sample_problems("test", 50, seed=1)]
    assert a != [p.text for p in sample_problems("test", 50, seed=2)]


def test_answers_are_exact_and_chains_stay_in_range():
    for p in sample_problems("train", 500, seed=0):
        assert p.answer == eval(p.text[len("Compute ") : -1])
        assert all(0 <= s.after <= 99 for s in p.steps())
        assert MAIN_STEPS[0] <= len(p.ops) <= MAIN_STEPS[1]
        assert parse_problem(p.text) == p
    assert all(TRANSFER_STEPS[0] <= len(p.ops) <= TRANSFER_STEPS[1] for p in sample_problems("transfer", 100))


def test_forgot_carry_is_the_plausible_slip():
    from lynx.organism.problems import Step

    assert Step(47, "+", 8).forgot_carry == 45 and Step(47, "+", 8).carries
    assert Step(52, "-", 7).forgot_carry == 55 and Step(52, "-", 7).carries
    assert not Step(41, "+", 3).carries


def test_unknown_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown organism split 'dev'"):
        sample_problems("dev", 3)
