"""Send N chat requests through bespokelabs-curator (0.1.31) to an OpenAI-compatible server.

Run with the peers venv's python (curator pins openai 2.x). Prints one JSON line:
{"system", "requests", "seconds", "answered"} or {"system", "error"}.
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

    # A fresh cache so no answer is replayed; no telemetry, no rich live display.
    os.environ["CURATOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="curator-cache-")
    os.environ.setdefault("TELEMETRY_ENABLED", "false")
    os.environ.setdefault("CURATOR_DISABLE_RICH_DISPLAY", "1")
    os.environ.setdefault("OPENAI_API_KEY", "EMPTY")
    # litellm bundles tiktoken's cl100k_base; this module points TIKTOKEN_CACHE_DIR at it,
    # so curator's token counting needs no download (plain `import litellm` is lazy now).
    import litellm.litellm_core_utils.default_encoding  # noqa: F401
    from bespokelabs import curator

    class Echo(curator.LLM):
        def prompt(self, row):
            return row["prompt"]

        def parse(self, row, response):
            return {"prompt": row["prompt"], "response": response}

    llm = Echo(
        model_name=args.model,
        backend="openai",
        generation_params={"max_tokens": 16, "temperature": 0.0},
        backend_params={
            "base_url": args.url,
            "api_key": "EMPTY",
            "max_concurrent_requests": args.concurrency,
            # Far above what the server can do, so only concurrency limits the rate.
            "max_requests_per_minute": 10_000_000,
            "max_tokens_per_minute": 10_000_000_000,
            "max_retries": 3,
            "request_timeout": 60,
        },
    )
    rows = [{"prompt": f"curator {time.time_ns()} question {i}"} for i in range(args.requests)]
    started = time.monotonic()
    result = llm(rows)
    seconds = time.monotonic() - started
    dataset = getattr(result, "dataset", result)
    answered = sum(1 for row in dataset if row.get("response"))
    print(json.dumps({"system": "curator", "requests": args.requests, "seconds": seconds, "answered": answered}))


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # report, don't crash the bench
        print(json.dumps({"system": "curator", "error": f"{type(err).__name__}: {err}"[:500]}))
        sys.exit(1)
