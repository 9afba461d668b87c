import polars as pl

from honing.method.generate import request_seed, select_prompts


def pool(n):
    return pl.DataFrame({"id": [f"p{i}" for i in range(n)], "prompt": [f"q{i}" for i in range(n)]})


def test_seeds_depend_on_the_prompt_id_not_its_position():
    assert request_seed(0, "p1") == request_seed(0, "p1")
    assert request_seed(0, "p1") != request_seed(1, "p1")
    assert request_seed(0, "p1") != request_seed(0, "p2")


def test_subset_is_stable_under_reordering_and_mostly_under_growth():
    base = set(select_prompts(pool(200), 50, seed=3)["id"])
    shuffled = set(select_prompts(pool(200).sample(fraction=1.0, shuffle=True, seed=1), 50, seed=3)["id"])
    assert base == shuffled
    grown = set(select_prompts(pool(202), 50, seed=3)["id"])
    assert len(base & grown) >= 48  # two new prompts can displace at most two
    assert select_prompts(pool(10), 0, seed=3).height == 10
