import random

import pytest

from honing.micro import world


def problems(n=500, seed=0):
    rng = random.Random(seed)
    return [world.make_problem(rng) for _ in range(n)], rng


def test_problems_are_seeded_and_in_range():
    a, _ = problems(50, seed=3)
    b, _ = problems(50, seed=3)
    assert [p.text for p in a] == [p.text for p in b]
    for p in problems()[0]:
        assert 10 <= p.start <= 60 and 2 <= len(p.ops) <= 4
        assert all(world.LOW <= v <= world.HIGH for v in p.values)
        assert all(2 <= d <= 9 and op in "+-" for op, d in p.ops)


def test_parse_problem_recovers_the_structure_from_text():
    for p in problems()[0]:
        q = world.parse_problem(p.text)
        assert (q.start, q.ops) == (p.start, p.ops)


def test_parse_problem_rejects_other_text():
    with pytest.raises(ValueError, match="not a micro-world problem"):
        world.parse_problem("What is the capital of France?")


def test_gold_solution_parses_and_answers():
    for p in problems()[0]:
        parsed = world.parse_solution(world.gold_solution(p))
        assert parsed.error is None and parsed.answer == p.answer
        assert [c for *_, c in parsed.steps] == p.values


def test_noisy_solution_drops_carries_at_the_configured_rate():
    ps, rng = problems(3000)
    dropped = carries = 0
    for p in ps:
        steps = world.parse_solution(world.noisy_solution(p, rng, carry_drop=0.6, step_noise=0.0)).steps
        for a, op, b, c in steps:
            if world.has_carry(a, op, b):
                carries += 1
                dropped += c == a + b - 10
            else:
                assert c == world.apply(a, op, b)
    assert 0.55 < dropped / carries < 0.65


def test_parse_solution_stops_at_the_first_malformed_part():
    parsed = world.parse_solution("Step 1 : 34 + 7 = 41 ; Step 2 : 41 - = 3 ; Answer : 3")
    assert len(parsed.steps) == 1 and parsed.answer is None
    assert "malformed part" in parsed.error
    assert world.parse_solution("Step 1 : 34 + 7 = 41").error == "no final answer line"
    assert "numbered 3" in world.parse_solution("Step 3 : 34 + 7 = 41 ; Answer : 41").error


def test_vocabulary_covers_every_word_the_world_writes():
    vocab = set(world.vocabulary())
    ps, rng = problems(200)
    for p in ps:
        words = (p.text + " " + world.noisy_solution(p, rng, 0.6, 0.3)).split()
        assert {w for w in words if not w.isdigit()} <= vocab
