"""Send N chat requests through distilabel (1.5.3) to an OpenAI-compatible server.

Run with the peers venv's python (distilabel pins openai 2.x). distilabel's
concurrency is the input batch size of the task: each batch is one asyncio.gather.
Prints one JSON line: {"system", "requests", "seconds", "answered"} or {"system", "error"}.
"""

import argparse
import json
import os
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="honing-echo")
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import TextGeneration

    rows = [{"instruction": f"distilabel {time.time_ns()} question {i}"} for i in range(args.requests)]
    with Pipeline(name="honing-bench", cache_dir=tempfile.mkdtemp(prefix="distilabel-cache-")) as pipeline:
        load = LoadDataFromDicts(data=rows, batch_size=args.concurrency)
        generate = TextGeneration(
            llm=OpenAILLM(model=args.model, base_url=args.url, api_key="EMPTY", max_retries=3, timeout=60),
            input_batch_size=args.concurrency,
        )
        load >> generate
    started = time.monotonic()
    distiset = pipeline.run(
        use_cache=False,
        parameters={generate.name: {"llm": {"generation_kwargs": {"max_new_tokens": 16, "temperature": 0.0}}}},
    )
    seconds = time.monotonic() - started
    dataset = distiset["default"]["train"]
    answered = sum(1 for g in dataset["generation"] if g)
    print(json.dumps({"system": "distilabel", "requests": args.requests, "seconds": seconds, "answered": answered}))


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # report, don't crash the bench
        print(json.dumps({"system": "distilabel", "error": f"{type(err).__name__}: {err}"[:500]}))
        sys.exit(1)
