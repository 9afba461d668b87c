"""The transformers backend on the untrained tiny model: its outputs are garbage but
deterministic, which is all these tests need (order, batching, seeds, stops, counts)."""

from __future__ import annotations

import pytest
import torch

from honing.calls.backends import BackendError, ChatRequest, SamplingParams
from honing.calls.backends.transformers_backend import (
    TransformersBackend,
    batch_seed,
    cut_at_stop,
    model_identity,
)
from honing.micro.tinymodel import save_untrained

PROMPTS = [
    "Problem 3 + 4",
    "Problem 12 + 34 Solution",
    "Problem 7 - 2 Check ones tens carry",
    "Problem 56 + 7 Feedback",
    "Problem 1",
    "Problem 99 - 45 Solution 54 Check ones ok tens ok Verdict",
]


def user(text: str, **params) -> ChatRequest:
    return ChatRequest(messages=({"role": "user", "content": text},), params=SamplingParams(**params))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # A 0.2 M-parameter model gains nothing from threads, and on a shared 2-core runner
    # OpenMP threads waiting on each other made this module 5x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_untrained(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def backend(model_dir):
    b = TransformersBackend(str(model_dir), batch_size=4)
    yield b
    b.close()


def texts(results):
    return [[c.text for c in r.completions] for r in results]


def test_greedy_is_deterministic(backend):
    requests = [user(p, max_tokens=10) for p in PROMPTS]
    assert texts(backend.generate(requests)) == texts(backend.generate(requests))


def test_order_preserved_across_groups_and_batches(backend):
    # Three param groups interleaved, batch_size 4 -> several batches per group, each
    # sorted by prompt length: every result must still land at its request's index.
    requests = [user(p, max_tokens=6 + i % 3) for i, p in enumerate(PROMPTS * 2)]
    seen = {}
    results = backend.generate(requests, on_result=lambda i, r: seen.setdefault(i, r))
    alone = [backend.generate([r])[0] for r in requests]
    assert texts(results) == texts(alone)
    assert sorted(seen) == list(range(len(requests)))
    assert [seen[i] for i in range(len(requests))] == results
    assert [r.completion_tokens for r in results] == [6 + i % 3 for i in range(len(requests))]


def test_left_padding_matches_unbatched_greedy(model_dir, backend):
    requests = [user(p, max_tokens=12) for p in PROMPTS]
    one_by_one = TransformersBackend(str(model_dir), batch_size=1)
    all_at_once = TransformersBackend(str(model_dir), batch_size=64)
    expected = texts(one_by_one.generate(requests))
    assert texts(all_at_once.generate(requests)) == expected
    assert texts(backend.generate(requests)) == expected


def test_n_samples(backend):
    [result] = backend.generate([user(PROMPTS[0], n=3, temperature=1.0, max_tokens=12, seed=7)])
    assert len(result.completions) == 3
    assert len({c.text for c in result.completions}) > 1  # sampled rows are not copies
    assert result.completion_tokens <= 3 * 12


def test_greedy_with_n_gives_n_equal_answers(backend):
    [single] = backend.generate([user(PROMPTS[1], max_tokens=6)])
    [triple] = backend.generate([user(PROMPTS[1], n=3, max_tokens=6)])
    assert [c.text for c in triple.completions] == [single.text] * 3
    assert triple.completion_tokens == 3 * single.completion_tokens


def test_same_batch_and_seed_give_same_bytes(backend):
    requests = [user(p, n=2, temperature=1.0, top_p=0.9, max_tokens=12, seed=i) for i, p in enumerate(PROMPTS)]
    first = [r.to_json() for r in backend.generate(requests)]
    torch.manual_seed(12345)  # unrelated RNG use in between must not matter
    assert [r.to_json() for r in backend.generate(requests)] == first
    reseeded = [user(p, n=2, temperature=1.0, top_p=0.9, max_tokens=12, seed=100 + i) for i, p in enumerate(PROMPTS)]
    assert [r.to_json() for r in backend.generate(reseeded)] != first


def test_batch_seed_depends_on_every_seed():
    assert batch_seed([None, None]) is None
    assert batch_seed([1, 2]) == batch_seed([1, 2])
    assert batch_seed([1, 2]) != batch_seed([2, 1])
    assert batch_seed([1, None]) != batch_seed([1])


def test_stop_string_cuts_text_and_reports_stop(backend):
    [free] = backend.generate([user(PROMPTS[3], max_tokens=24, temperature=1.0, seed=3)])
    words = free.text.split()
    stop = words[len(words) // 2]
    [stopped] = backend.generate([user(PROMPTS[3], max_tokens=24, temperature=1.0, seed=3, stop=(stop,))])
    expected = free.text[: free.text.index(stop)]
    assert stopped.text == expected
    assert stopped.completions[0].finish_reason == "stop"
    assert stopped.completion_tokens < free.completion_tokens


def test_cut_at_stop_takes_the_earliest_string():
    assert cut_at_stop("a b c d", ("d", "b")) == ("a ", True)
    assert cut_at_stop("a b", ("x", "")) == ("a b", False)


def test_continue_final_message_continues_the_assistant_prefix(model_dir, backend):
    prefix = [{"role": "user", "content": "Problem 3 + 4"}, {"role": "assistant", "content": "Solution 7"}]
    request = ChatRequest(
        messages=tuple(prefix), params=SamplingParams(max_tokens=8), continue_final_message=True
    )
    [result] = backend.generate([request])
    # The continued prompt is the plain text up to the prefix: no EOS closing the turn.
    tokenizer = backend.tokenizer
    prompt_ids = tokenizer("Problem 3 + 4 Solution 7")["input_ids"]
    assert result.prompt_tokens == len(prompt_ids)
    with torch.inference_mode():
        out = backend.model.generate(torch.tensor([prompt_ids]), max_new_tokens=8, do_sample=False)
    expected = tokenizer.decode(out[0].tolist(), skip_special_tokens=True)
    assert "Problem 3 + 4 Solution 7" + result.text == expected
    # A closed assistant turn is a different prompt (it ends with EOS).
    [closed] = backend.generate([ChatRequest(messages=tuple(prefix), params=SamplingParams(max_tokens=8))])
    assert closed.prompt_tokens == len(prompt_ids) + 1


def test_continue_final_message_needs_an_assistant_prefix(backend):
    request = ChatRequest(messages=({"role": "user", "content": "Problem 1"},), continue_final_message=True)
    with pytest.raises(BackendError, match="assistant prefix"):
        backend.generate([request])


def test_prompt_tokens_exclude_padding(backend):
    results = backend.generate([user(p, max_tokens=4) for p in PROMPTS])
    expected = [len(backend.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert [r.prompt_tokens for r in results] == expected
    assert all(r.completion_tokens == 4 for r in results)
    assert all(c.finish_reason == "length" for r in results for c in r.completions)


def test_completion_tokens_stop_at_eos(backend):
    # The untrained model never picks EOS greedily; sampling does, now and then. Each
    # request runs alone, so its batch seed is batch_seed([its seed]) and we can replay it.
    requests = [user(f"{p} {i}", temperature=1.0, max_tokens=24, seed=i) for i, p in enumerate(PROMPTS * 3)]
    results = [backend.generate([r])[0] for r in requests]
    ended = [(req, res) for req, res in zip(requests, results) if res.completions[0].finish_reason == "stop"]
    assert ended, "expected some samples to end with EOS"
    eos = backend.tokenizer.eos_token_id
    for request, result in ended:
        prompt = backend.tokenizer(request.messages[0]["content"])["input_ids"]
        torch.manual_seed(batch_seed([request.params.seed]))
        with torch.inference_mode():
            out = backend.model.generate(
                torch.tensor([prompt]), max_new_tokens=24, do_sample=True, temperature=1.0, top_p=1.0, top_k=0
            )
        generated = out[0, len(prompt) :].tolist()
        assert result.completion_tokens == generated.index(eos) + 1  # EOS counted once, nothing after
        assert result.completion_tokens < 24


def test_model_id_names_the_weights(tmp_path):
    path = tmp_path / "ckpt"
    save_untrained(path, seed=0)
    first = model_identity(str(path))
    assert first.startswith(f"{path}@") and len(first.split("@")[1]) == 12
    save_untrained(path, seed=0)
    assert model_identity(str(path)) == first  # same weights, same name
    save_untrained(path, seed=1)  # "retrained" at the same path
    assert model_identity(str(path)) != first
    assert model_identity("org/some-model") == "org/some-model"
    assert model_identity("org/some-model", revision="v2") == "org/some-model@v2"


def test_backend_model_id_and_results_carry_it(model_dir, backend):
    assert backend.model_id == model_identity(str(model_dir))
    [result] = backend.generate([user(PROMPTS[0], max_tokens=2)])
    assert result.model == backend.model_id


def test_folder_without_weights_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(BackendError, match="no weight files"):
        model_identity(str(tmp_path))
