"""filter + build_sft + build_pairs on millions of synthetic candidate rows: seconds per
million rows, peak memory, and a straightforward pandas version of the same logic.

    .venv/bin/python bench/bench_filters.py                          # 1 M and 10 M rows, pandas at 1 M
    .venv/bin/python bench/bench_filters.py --sizes 200000 --pandas-sizes 200000   # a quick look

The data are micro-like: seeded arithmetic word problems (three steps) with the gold
solution as reference, `--samples` answers per prompt, each right or one of two
wrong solutions, and some refined once or twice (about 1.3 rows per candidate);
the critic's verdict agrees with the rule check 80 % of the time, 5 % of replies
did not parse, 5 % of prompts have no reference. Prompts use the reference family
(`--family micro` adds the micro world's step checker to the feedback records: a
Python oracle per distinct answer, measured but not vectorizable here).

Each size runs in fresh subprocesses (peaks don't mix): one writes the inputs (not
timed); then the three stages as `dvc repro` runs them, each in a process of its
own (`stages.filter.run`, `stages.build_sft.run`, `stages.build_pairs.run`,
params.yaml's defaults: inputs read and validated, outputs validated and written),
whose peak RSS is the largest of the three; one runs the pandas version (pandas + pyarrow, no validation, the templates filled by string
concatenation as the streaming path does, messages as Python lists of dicts; the
self-critic's records balanced by the same seeded sha256 ranks; the reference
family has no step checker, so params.yaml's noise checks add no record on either
side).
Seconds are wall seconds of the work (imports excluded), peak RSS is the child's
`ru_maxrss`. Both sides report their output sizes, which must agree.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

ITERATION = "it1"
PROMPTS = "data/prepare/train.parquet"
REFINEMENTS = f"data/{ITERATION}/refine/refinements.parquet"
OUTPUTS = {"filter": f"data/{ITERATION}/filter/filtered.parquet", "build_sft": f"data/{ITERATION}/build_sft/sft.parquet",
           "build_pairs": f"data/{ITERATION}/build_pairs/pairs.parquet"}


# ---------------------------------------------------------------- synthetic inputs


def synthetic(folder: Path, rows: int, *, samples: int = 4, family: str = "reference", seed: int = 0,
              block_prompts: int = 50_000) -> dict:
    """Write a prompts artifact and a refinements artifact of about `rows` rows under
    `folder` (both sorted as prepare and refine write them). Returns their sizes."""
    import numpy as np
    import polars as pl

    from honing.artifacts.io import write_batches
    from honing.micro.world import GAIN_PHRASES, LOSS_PHRASES, NAMES, THINGS
    from schemas.prompts import Prompts
    from schemas.refinements import Refinements

    per_candidate = 1.3  # rows, measured on these draws
    n_prompts = max(1, round(rows / (samples * per_candidate)))
    blocks = [(start, min(block_prompts, n_prompts - start)) for start in range(0, n_prompts, block_prompts)]
    made = {"prompts": 0, "rows": 0}

    def block(start: int, n: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        rng = np.random.default_rng([seed, start])
        v = [rng.integers(10, 61, n)]
        ops, ds = [], []
        for _ in range(3):
            d = rng.integers(2, 10, n)
            up = rng.random(n) < 0.5
            up = np.where(v[-1] - d < 10, True, np.where(v[-1] + d > 99, False, up))
            ops.append(up)
            ds.append(d)
            v.append(np.where(up, v[-1] + d, v[-1] - d))
        phrase = [rng.integers(0, 3, n) for _ in range(3)]
        p = pl.DataFrame({"i": np.arange(start, start + n), "name": rng.integers(0, len(NAMES), n),
                          "thing": rng.integers(0, len(THINGS), n), "unreferenced": rng.random(n) < 0.05,
                          **{f"v{k}": v[k] for k in range(4)}, **{f"d{k}": ds[k] for k in range(3)},
                          **{f"up{k}": ops[k] for k in range(3)}, **{f"ph{k}": phrase[k] for k in range(3)}})
        name = pl.col("name").replace_strict(list(range(len(NAMES))), list(NAMES), return_dtype=pl.String)
        thing = pl.col("thing").replace_strict(list(range(len(THINGS))), list(THINGS), return_dtype=pl.String)

        def sentence(k: int) -> pl.Expr:
            d = pl.col(f"d{k}").cast(pl.String)
            gains = [pl.concat_str([pl.lit(t.split("{d}")[0]), d, pl.lit(t.split("{d}")[1])]) for t in GAIN_PHRASES]
            losses = [pl.concat_str([pl.lit(t.split("{d}")[0]), d, pl.lit(t.split("{d}")[1])]) for t in LOSS_PHRASES]
            out = pl.lit(None, pl.String)
            for j in range(3):
                out = pl.when(pl.col(f"up{k}") & (pl.col(f"ph{k}") == j)).then(gains[j]).otherwise(out)
                out = pl.when(~pl.col(f"up{k}") & (pl.col(f"ph{k}") == j)).then(losses[j]).otherwise(out)
            return pl.concat_str([name, pl.lit(" "), out, pl.lit(" . ")])

        def solution(values: list[pl.Expr], answer: pl.Expr) -> pl.Expr:
            parts = []
            for k in range(3):
                op = pl.when(pl.col(f"up{k}")).then(pl.lit(" + ")).otherwise(pl.lit(" - "))
                parts += [pl.lit(f"Step {k + 1} : "), values[k].cast(pl.String), op, pl.col(f"d{k}").cast(pl.String),
                          pl.lit(" = "), values[k + 1].cast(pl.String), pl.lit(" ; ")]
            return pl.concat_str([*parts, pl.lit("Answer : "), answer.cast(pl.String)])

        gold = [pl.col(f"v{k}") for k in range(4)]
        slip = gold[2] + 10  # wrong at step 2, carried on (a dropped carry's kind of mistake)
        carried = [gold[0], gold[1], slip,
                   pl.when(pl.col("up2")).then(slip + pl.col("d2")).otherwise(slip - pl.col("d2"))]
        p = p.with_columns(
            id=pl.col("i").cast(pl.String).str.zfill(16),
            prompt=pl.concat_str([name, pl.lit(" has "), pl.col("v0").cast(pl.String), pl.lit(" "), thing,
                                  pl.lit(" . "), sentence(0), sentence(1), sentence(2), pl.lit("How many "), thing,
                                  pl.lit(" now ?")]),
            gold=solution(gold, gold[3]), wrong1=solution(carried, carried[3]),
            wrong2=solution(gold, gold[3] + 1),  # every step right, the answer line off by one
            answer=pl.when(~pl.col("unreferenced")).then(pl.col("v3").cast(pl.String)))
        prompts = p.select("id", "prompt", pl.col("gold").alias("reference"), "answer",
                           pl.lit(family).alias("task"), pl.lit(None, pl.String).alias("metadata"),
                           pl.lit("bench").alias("source"), pl.lit("train").alias("split"))
        # candidates: a variant per round (0 gold, 1 and 2 wrong), round 0 always
        c = n * samples
        u = rng.random((6, c))
        r0 = np.where(u[0] < 0.6, 0, np.where(u[0] < 0.85, 1, 2))
        r1 = np.where(u[2] < 0.6, 0, 1)
        has1 = np.where(r0 > 0, u[1] < 0.7, u[1] < 0.1)
        has2 = has1 & (r1 > 0) & (u[3] < 0.5)
        r2 = np.where(u[4] < 0.5, 0, 2)
        variants = [[a] + ([b] if h1 else []) + ([e] if h2 else [])
                    for a, b, e, h1, h2 in zip(r0.tolist(), r1.tolist(), r2.tolist(), has1.tolist(), has2.tolist(),
                                               strict=True)]
        cands = pl.DataFrame({"prompt_index": np.repeat(np.arange(n), samples), "k": np.tile(np.arange(samples), n),
                              "variant": variants})
        rows = cands.explode("variant").with_columns(round=pl.int_range(pl.len()).over("prompt_index", "k"))
        m = rows.height
        w = rng.random((4, m))
        texts = p.select("gold", "wrong1", "wrong2", "prompt", "id")
        rows = rows.with_columns(texts[rows.get_column("prompt_index")]).with_columns(
            right=pl.col("variant") == 0, agrees=pl.Series(w[0] < 0.8), unparsed=pl.Series(w[1] < 0.05),
            noise=pl.Series(rng.integers(0, 4, m)))
        verdict = (pl.when(pl.col("unparsed")).then(pl.lit("unparsed"))
                   .when(pl.col("right") == pl.col("agrees")).then(pl.lit("correct")).otherwise(pl.lit("incorrect")))
        rows = rows.with_columns(verdict=verdict).with_columns(
            candidate_id=pl.concat_str([pl.col("id"), pl.lit(":"), pl.col("k").cast(pl.String)]),
            response=pl.when(pl.col("variant") == 0).then("gold").when(pl.col("variant") == 1).then("wrong1")
            .otherwise("wrong2"),
            score=pl.when(pl.col("verdict") == "correct").then(7 + pl.col("noise"))
            .when(pl.col("verdict") == "incorrect").then(1 + pl.col("noise")).cast(pl.Int64),
        )
        refinements = rows.select(
            pl.concat_str([pl.col("candidate_id"), pl.lit("@"), pl.col("round").cast(pl.String)]).alias("id"),
            "candidate_id", pl.col("id").alias("prompt_id"), "prompt", pl.col("round").cast(pl.Int64), "response",
            pl.when(pl.col("verdict") == "unparsed").then(pl.lit("Step 2 looks"))
            .otherwise(pl.concat_str([pl.lit("Step 2 : checked ; Verdict : "), pl.col("verdict")])).alias("feedback"),
            "verdict", "score",
            pl.when(pl.col("verdict") == "incorrect").then(pl.lit("step 2")).alias("weaknesses"),
            pl.when(pl.col("verdict") == "incorrect").then(pl.lit("redo step 2")).alias("suggestions"),
            pl.when(pl.col("verdict") == "unparsed").then(pl.lit("no final 'Verdict : correct|incorrect'"))
            .alias("parse_error"),
            pl.lit(None, pl.String).alias("refinement"), pl.lit(None, pl.Int64).alias("flagged_step"),
            pl.lit(None, pl.String).alias("quoted"), pl.lit(None, pl.Int64).alias("recomputed"),
            pl.lit("bench-policy").alias("model"), pl.lit(ITERATION).alias("iteration"))
        return prompts, refinements

    def stream(which: int):
        for start, n in blocks:
            frame = block(start, n)[which]
            made["prompts" if which == 0 else "rows"] += frame.height
            yield frame

    write_batches(stream(0), folder / PROMPTS, Prompts)
    write_batches(stream(1), folder / REFINEMENTS, Refinements)
    return made


# ---------------------------------------------------------------- the two sides


def params() -> dict:
    """params.yaml's blocks for the three stages (the defaults), as dvc would pass them."""
    import yaml

    full = yaml.safe_load((ROOT / "params.yaml").read_text())
    return {"templates": str(ROOT / full["templates"]), "iterations": {ITERATION: {}},
            **{stage: full[stage] for stage in ("filter", "build_sft", "build_pairs")}}


STAGES = ("filter", "build_sft", "build_pairs")


def run_stage(folder: Path, name: str) -> dict:
    """One of the three stages, in `folder`, as `dvc repro` runs it: in a process of its
    own (the driver starts one per stage), params.yaml's blocks for it."""
    import importlib

    import polars as pl

    stage = importlib.import_module(f"stages.{name}")
    os.chdir(folder)
    blocks = params()
    stage.load_params = lambda _name, _key: blocks
    started = time.perf_counter()
    stage.run([ITERATION])
    seconds = time.perf_counter() - started
    sizes = {name: pl.scan_parquet(OUTPUTS[name]).select(pl.len()).collect().item()}
    if name == "filter":
        sizes["kept"] = pl.scan_parquet(OUTPUTS["filter"]).filter(pl.col("kept")).select(pl.len()).collect().item()
    return {"seconds": {name: seconds}, "sizes": sizes}


def run_polars(folder: Path, args: argparse.Namespace) -> dict:
    """The three stages, each in a fresh process, in order: their seconds, output sizes
    and peak RSS (each stage's, and the largest, which is what a `dvc repro` needs)."""
    runs = {name: measure("polars", folder, args, stage=name) for name in STAGES}
    return {"seconds": {name: run["seconds"][name] for name, run in runs.items()},
            "sizes": {k: v for run in runs.values() for k, v in run["sizes"].items()},
            "stage_peak_rss_mb": {name: run["peak_rss_mb"] for name, run in runs.items()},
            "peak_rss_mb": max(run["peak_rss_mb"] for run in runs.values())}


def run_pandas(folder: Path) -> dict:
    """The same logic in pandas: rule check by regex, finals by a stable sort, the
    vote, reasons and duplicates by group-bys and masks, records and pairs built as
    Python lists of message dicts. No validation."""
    import numpy as np
    import pandas as pd

    cfg = params()
    answer_template = (Path(cfg["templates"]) / "answer.jinja2").read_text().strip().split("{{ prompt }}")
    feedback_template = (Path(cfg["templates"]) / "feedback.jinja2").read_text().strip()
    before, rest = feedback_template.split("{{ prompt }}")
    middle, after = rest.split("{{ response }}")
    seconds = {}

    def extract(response: pd.Series) -> pd.Series:
        line = response.str.strip().str.extract(r"Answer : (\S+)\s*$", expand=False)
        last = response.str.findall(r"-?\d[\d,]*(?:\.\d+)?").str[-1]
        return line.where(line.notna(), last)

    def normal(value: pd.Series) -> pd.Series:
        return value.str.replace(",", "", regex=False).str.rstrip(".").str.strip()

    def rule(frame: pd.DataFrame, answers: pd.Series) -> tuple[pd.Series, pd.Series]:
        got = extract(frame["response"])
        ref = frame["prompt_id"].map(answers)
        ref = ref.where(~ref.str.contains("####", na=False), ref.str.rsplit("####", n=1).str[-1]).str.strip()
        correct = (got.notna() & (normal(got) == normal(ref))).astype(object)
        correct[ref.isna()] = None
        return correct, got

    def user(text: pd.Series) -> list:
        return [[{"role": "user", "content": t}] for t in text]

    def assistant(text: pd.Series) -> list:
        return [[{"role": "assistant", "content": t}] for t in text]

    os.chdir(folder)
    started = time.perf_counter()
    prompts = pd.read_parquet(PROMPTS, columns=["id", "answer"])
    answers = prompts.set_index("id")["answer"]
    refinements = pd.read_parquet(REFINEMENTS)
    ordered = refinements.reset_index(drop=True).sort_values("round", kind="stable")
    finals = ordered.drop_duplicates("candidate_id", keep="last")
    first = ordered.drop_duplicates("candidate_id", keep="first")[["candidate_id"]].reset_index(drop=True)
    finals = first.merge(finals, on="candidate_id", how="left")
    correct, got = rule(finals, answers)
    final_answer = got.str.strip().replace("", None)
    counts = (pd.DataFrame({"prompt_id": finals["prompt_id"], "a": final_answer}).dropna()
              .groupby(["prompt_id", "a"]).size().rename("n").reset_index())
    top = counts.groupby("prompt_id")["n"].transform("max")
    best = counts[counts["n"] == top]
    unique_best = best[best.groupby("prompt_id")["n"].transform("size") == 1]
    samples = finals.groupby("prompt_id")["candidate_id"].transform("size")
    majority = finals["prompt_id"].map(unique_best.set_index("prompt_id")["a"])
    agreement = (finals["prompt_id"].map(unique_best.set_index("prompt_id")["n"]) / samples).fillna(0.0)
    reference = finals["prompt_id"].map(answers)
    length = finals["response"].str.len()
    incorrect = correct.eq(False)
    reason = pd.Series(None, index=finals.index, dtype=object)
    reason[incorrect] = ("incorrect: final answer " + got[incorrect].map(repr) + " does not match the reference "
                         + reference[incorrect].map(repr))
    short = reason.isna() & ~length.between(cfg["filter"].get("min_chars", 1), cfg["filter"].get("max_chars", 8192))
    reason[short] = "length: " + length[short].astype(str) + " outside 1..8192 characters"
    passing = reason.isna()
    duplicate = passing & finals[["prompt_id", "response"]].where(passing).duplicated(keep="first") & passing
    reason[duplicate] = "duplicate: the same response to the same prompt is kept once"
    filtered = pd.DataFrame({
        "id": finals["candidate_id"], "prompt_id": finals["prompt_id"], "prompt": finals["prompt"],
        "response": finals["response"], "rounds": finals["round"], "verdict": finals["verdict"],
        "score": finals["score"], "correct": correct.astype("boolean"), "final_answer": final_answer,
        "majority": majority, "agreement": agreement, "reward": np.nan, "kept": reason.isna(), "reason": reason,
        "iteration": ITERATION})
    Path(OUTPUTS["filter"]).parent.mkdir(parents=True, exist_ok=True)
    filtered.to_parquet(OUTPUTS["filter"], compression="zstd", index=False)
    seconds["filter"] = time.perf_counter() - started

    started = time.perf_counter()
    kept = pd.read_parquet(OUTPUTS["filter"], columns=["id", "prompt_id", "prompt", "response", "kept"])
    kept = kept[kept["kept"]]
    kept = kept[kept.groupby("prompt_id").cumcount() < cfg["build_sft"]["max_answers_per_prompt"]]
    refinements = pd.read_parquet(REFINEMENTS, columns=["id", "prompt_id", "prompt", "round", "response", "feedback",
                                                        "verdict"])
    round0 = refinements[refinements["round"] == 0]
    right, _ = rule(round0, answers)
    agree = right.notna() & (round0["verdict"] != "unparsed") & ((round0["verdict"] == "correct") == right.eq(True))
    feedback = round0[agree]
    critic = cfg["build_sft"].get("feedback", {})
    if critic.get("balance"):  # every record of the rarer kind, the lowest-ranked `balance` x as many of the other
        right_answer = right[agree].eq(True)
        rare = right_answer == (right_answer.sum() <= (~right_answer).sum())
        rank = feedback["id"].map(lambda i: hashlib.sha256(f"{critic.get('seed', 0)}:{i}".encode()).hexdigest())
        chosen = rank[~rare].sort_values().index[:int(critic["balance"] * rare.sum())]
        feedback = feedback[rare | feedback.index.isin(chosen)]
    records = pd.concat([
        pd.DataFrame({"id": kept["id"] + "/answer",
                      "prompt": user(answer_template[0] + kept["prompt"] + answer_template[1]),
                      "completion": assistant(kept["response"]), "kind": "answer", "source_id": kept["id"]}),
        pd.DataFrame({"id": feedback["id"] + "/feedback",
                      "prompt": user(before + feedback["prompt"] + middle + feedback["response"] + after),
                      "completion": assistant(feedback["feedback"]), "kind": "feedback",
                      "source_id": feedback["id"]}),
    ], ignore_index=True).assign(iteration=ITERATION)
    Path(OUTPUTS["build_sft"]).parent.mkdir(parents=True, exist_ok=True)
    records.to_parquet(OUTPUTS["build_sft"], compression="zstd", index=False)
    seconds["build_sft"] = time.perf_counter() - started

    started = time.perf_counter()
    rows = pd.read_parquet(REFINEMENTS, columns=["id", "prompt_id", "prompt", "response"]).reset_index(drop=True)
    value, _ = rule(rows, answers)
    rows = rows.assign(value=value.astype(float), position=np.arange(len(rows)))
    rows = rows[rows["value"].notna()]
    rows = rows.assign(first=rows.groupby("prompt_id")["position"].transform("min"),
                       text=rows.groupby("prompt_id")["prompt"].transform("last"))
    rows = rows.drop_duplicates(["prompt_id", "response"], keep="last")
    rows = rows.sort_values(["first", "value", "id"], ascending=[True, False, True], kind="stable")
    rows = rows.assign(rank=rows.groupby("prompt_id").cumcount(), count=rows.groupby("prompt_id")["id"].transform("size"))
    best = rows[rows["rank"] < np.minimum(cfg["build_pairs"]["max_pairs_per_prompt"], rows["count"] // 2)]
    worst = rows.assign(rank=rows["count"] - 1 - rows["rank"])[["prompt_id", "rank", "id", "response", "value"]]
    pairs = best.merge(worst, on=["prompt_id", "rank"], how="left", suffixes=("", "_worst"))
    pairs = pairs.assign(margin=pairs["value"] - pairs["value_worst"])
    pairs = pairs[(pairs["margin"] >= cfg["build_pairs"]["min_margin"]) & (pairs["margin"] > 0)]
    out = pd.DataFrame({"id": pairs["id"] + ">" + pairs["id_worst"], "prompt_id": pairs["prompt_id"],
                        "prompt": user(answer_template[0] + pairs["text"] + answer_template[1]),
                        "chosen": assistant(pairs["response"]), "rejected": assistant(pairs["response_worst"]),
                        "chosen_score": pairs["value"], "rejected_score": pairs["value_worst"],
                        "margin": pairs["margin"], "iteration": ITERATION})
    Path(OUTPUTS["build_pairs"]).parent.mkdir(parents=True, exist_ok=True)
    out.to_parquet(OUTPUTS["build_pairs"], compression="zstd", index=False)
    seconds["build_pairs"] = time.perf_counter() - started
    sizes = {"filter": len(filtered), "kept": int(filtered["kept"].sum()), "build_sft": len(records),
             "build_pairs": len(out)}
    return {"seconds": seconds, "sizes": sizes}


# ---------------------------------------------------------------- the driver


def child(args: argparse.Namespace) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    folder = Path(args.folder)
    if args.child == "make":
        result = synthetic(folder, args.rows, samples=args.samples, family=args.family)
    elif args.child == "polars":
        result = run_stage(folder, args.stage)
    else:
        result = run_pandas(folder)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def measure(kind: str, folder: Path, args: argparse.Namespace, rows: int = 0, stage: str = "") -> dict:
    command = [sys.executable, __file__, "--child", kind, "--folder", str(folder), "--rows", str(rows),
               "--samples", str(args.samples), "--family", args.family, "--stage", stage]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--pandas-sizes", type=int, nargs="*", default=[1_000_000],
                        help="sizes the pandas version runs at (default 1 M: at 10 M its object columns "
                             "would need more memory than a 2-core CI machine has)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--family", choices=["reference", "micro"], default="reference")
    parser.add_argument("--keep", type=Path, help="write the data here and keep it (default: a temp folder)")
    parser.add_argument("--child", choices=["make", "polars", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stage", choices=[*STAGES, ""], default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    print(f"filter + build_sft + build_pairs, {args.family} family, {args.samples} samples per prompt, "
          f"{os.cpu_count()} CPUs, polars threads {os.environ.get('POLARS_MAX_THREADS', 'default')}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-filters-") as scratch:
        for size in args.sizes:
            folder = (args.keep or Path(scratch)) / f"rows-{size}"
            made = measure("make", folder, args, size)
            polars_run = run_polars(folder, args)
            total = sum(polars_run["seconds"].values())
            line = {"rows": made["rows"], "prompts": made["prompts"], "polars_s": round(total, 2),
                    "polars_s_per_million": round(total / made["rows"] * 1e6, 3),
                    "polars_peak_rss_mb": round(polars_run["peak_rss_mb"]),
                    "polars_stage_peak_rss_mb": {k: round(v) for k, v in polars_run["stage_peak_rss_mb"].items()},
                    "polars_stage_s": {k: round(v, 2) for k, v in polars_run["seconds"].items()},
                    "outputs": polars_run["sizes"]}
            if size in args.pandas_sizes:
                pandas_run = measure("pandas", folder, args)
                pandas_total = sum(pandas_run["seconds"].values())
                line.update({"pandas_s": round(pandas_total, 2),
                             "pandas_s_per_million": round(pandas_total / made["rows"] * 1e6, 3),
                             "pandas_peak_rss_mb": round(pandas_run["peak_rss_mb"]),
                             "pandas_stage_s": {k: round(v, 2) for k, v in pandas_run["seconds"].items()},
                             "speedup_vs_pandas": round(pandas_total / total, 2),
                             "pandas_outputs": pandas_run["sizes"]})
                if pandas_run["sizes"] != {k: polars_run["sizes"][k] for k in pandas_run["sizes"]}:
                    line["warning"] = "pandas and polars outputs differ in size"
            results[size] = line
            print(json.dumps(line))
            if args.keep is None:
                subprocess.run(["rm", "-rf", str(folder)], check=False)
    sizes = sorted(results)
    if len(sizes) > 1:
        small, large = results[sizes[0]], results[sizes[-1]]
        print(json.dumps({"rss_ratio": round(large["polars_peak_rss_mb"] / small["polars_peak_rss_mb"], 3),
                          "s_per_million": {s: results[s]["polars_s_per_million"] for s in sizes}}))


if __name__ == "__main__":
    main()
