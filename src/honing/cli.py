"""The `honing` command: cache, spend, serve, preset, results, report, exp-table, inspect, compare, publish.

Each subcommand is a function that adds its parser to `COMMANDS`; the parser's
`run` default is called with the parsed arguments and returns the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from honing.errors import HoningError

# name -> function(subparsers) that adds the subcommand's parser (other modules may add theirs)
COMMANDS: dict[str, Callable[[argparse._SubParsersAction], None]] = {}


def command(name: str):
    def register(add: Callable[[argparse._SubParsersAction], None]):
        COMMANDS[name] = add
        return add
    return register


# ---- honing cache -------------------------------------------------------------------------


@command("cache")
def _add_cache(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="inspect or prune the request cache")
    parser.add_argument("--path", help="cache file (default: $HONING_CACHE_DIR/requests.sqlite "
                                       "or ~/.cache/honing/requests.sqlite)")
    actions = parser.add_subparsers(dest="action", required=True)
    stats = actions.add_parser("stats", help="rows, bytes, models, hits and misses")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(run=_cache_stats)
    prune = actions.add_parser("prune", help="delete old rows and/or one model's rows")
    prune.add_argument("--older-than-days", type=float, help="rows not used for this many days")
    prune.add_argument("--model", help="rows of this model id (see `honing cache stats`)")
    prune.set_defaults(run=_cache_prune)


def _open_cache(args: argparse.Namespace):
    from honing.calls.cache import RequestCache

    return RequestCache(args.path)


def _cache_stats(args: argparse.Namespace) -> int:
    with _open_cache(args) as cache:
        stats = cache.stats()
    if args.json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return 0
    if not stats["exists"]:
        print(f"{stats['path']}: no cache yet")
        return 0
    lifetime = stats["lifetime"]
    print(f"{stats['path']}: {stats['rows']} answers, {stats['value_bytes']:,} bytes of answers, "
          f"{stats['file_bytes']:,} bytes on disk")
    print(f"lifetime: {lifetime.get('hits', 0)} hits, {lifetime.get('misses', 0)} misses, "
          f"{lifetime.get('bytes_written', 0):,} bytes written")
    for model, rows in stats["models"].items():
        print(f"  {rows:>8}  {model}")
    return 0


def _cache_prune(args: argparse.Namespace) -> int:
    if args.older_than_days is None and args.model is None:
        print("honing cache prune: give --older-than-days N and/or --model M "
              "(to drop everything, delete the cache file)", file=sys.stderr)
        return 2
    with _open_cache(args) as cache:
        deleted = cache.prune(older_than_days=args.older_than_days, model=args.model)
        print(f"{cache.path}: deleted {deleted} answers")
    return 0


# ---- honing spend -------------------------------------------------------------------------


@command("spend")
def _add_spend(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "spend", help="money spent on model calls, per run and stage (from the spend ledger)",
        description="Money spent on paid model calls, per run and per stage, from the spend ledger. "
                    "A run is $HONING_RUN if it was set, else the project root's absolute path; "
                    "`HONING_RUN=<name> dvc repro` starts a new one (a new budget period).")
    parser.add_argument("--path", help="ledger file (default: $HONING_CACHE_DIR/spend.sqlite "
                                       "or ~/.cache/honing/spend.sqlite)")
    parser.add_argument("--run", dest="run_name",
                        help="only this run (a project's absolute path or a $HONING_RUN name)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=_spend)


def _spend(args: argparse.Namespace) -> int:
    from honing.calls.ledger import SpendLedger

    with SpendLedger(args.path) as ledger:
        rows = ledger.summary(run=args.run_name)
        path = ledger.path
    runs: dict[str, dict] = {}
    for row in rows:  # ordered by when each (run, stage, role, model) first spent
        run = runs.setdefault(row["run"], {"run": row["run"], "calls": 0, "prompt_tokens": 0,
                                           "completion_tokens": 0, "cost_usd": 0.0, "stages": []})
        for key in ("calls", "prompt_tokens", "completion_tokens", "cost_usd"):
            run[key] += row[key]
        run["stages"].append({k: row[k] for k in ("stage", "role", "model", "calls", "prompt_tokens",
                                                    "completion_tokens", "cost_usd", "first", "last")})
    if args.json:
        print(json.dumps({"path": str(path), "runs": list(runs.values())}, indent=2))
        return 0
    if not runs:
        print(f"{path}: no spend recorded" + (f" for run {args.run_name!r}" if args.run_name else ""))
        return 0
    for run in runs.values():
        print(f"run {run['run']}: ${run['cost_usd']:.4f} on {run['calls']:,} calls "
              f"({run['prompt_tokens']:,} prompt + {run['completion_tokens']:,} completion tokens)")
        for stage in run["stages"]:
            cost = f"${stage['cost_usd']:.4f}"
            print(f"  {cost:>10}  {stage['calls']:>7,} calls  {stage['stage']}  {stage['role']}  {stage['model']}")
    return 0


# ---- honing serve -----------------------------------------------------------------------


def _fault(text: str) -> tuple[str, float]:
    from honing.calls.server import FAULT_KINDS

    kind, _, rate = text.partition("=")
    if kind not in FAULT_KINDS or not rate:
        raise argparse.ArgumentTypeError(f"expected KIND=RATE with KIND one of {', '.join(FAULT_KINDS)}; "
                                         f"found {text!r}")
    try:
        return kind, float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"rate in {text!r} is not a number") from None


@command("serve")
def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="an OpenAI-compatible server on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one, printed)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="PATH", help="serve this checkpoint with the transformers backend")
    source.add_argument("--echo", action="store_true", help="reply with the last message (the default)")
    source.add_argument("--referee", metavar="POOL",
                        help="a strong critic with privileged information: SRT feedback from the task's verifier "
                             "and reference answer, for the questions in POOL (a prompts .parquet or a folder "
                             "of them, e.g. data/prepare; read again when a question is new)")
    parser.add_argument("--templates", default="prompts/srt",
                        help="with --referee: the preset whose feedback prompt it reads (default: prompts/srt)")
    parser.add_argument("--served-name", help="model name clients must send (default: PATH, referee or honing-echo)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed delay per reply")
    parser.add_argument("--fault", type=_fault, action="append", default=[], metavar="KIND=RATE",
                        help="inject a fault at a rate, e.g. rate_limit=0.1 (repeatable)")
    parser.add_argument("--retry-after-s", type=float, default=0.05, help="Retry-After sent with injected 429s")
    parser.add_argument("--slow-s", type=float, default=2.0, help="delay of an injected slow reply")
    parser.add_argument("--api-key-env", help="require the key in this environment variable (401 otherwise)")
    parser.add_argument("--log", help="append every attempt to this JSONL file")
    parser.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    import os

    from honing.calls.server import ChatServer, serve_forever

    backend, reply = None, None
    if args.model:
        from honing.calls.backends.transformers_backend import TransformersBackend

        backend = TransformersBackend(args.model)
    if args.referee:
        from honing.calls.referee import Referee

        reply = Referee(args.referee, args.templates)
        print(f"honing serve: referee over {args.referee} ({reply.check()} questions now)", flush=True)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        print(f"honing serve: {args.api_key_env} is not set", file=sys.stderr)
        return 2
    default_name = args.model or ("referee" if args.referee else "honing-echo")
    server = ChatServer(backend=backend, reply=reply, model=args.served_name or default_name,
                        port=args.port, latency_ms=args.latency_ms, faults=dict(args.fault),
                        retry_after_s=args.retry_after_s, slow_s=args.slow_s, api_key=api_key,
                        log_path=args.log)
    serve_forever(server)
    return 0


# ---- honing preset ----------------------------------------------------------------------


@command("preset")
def _add_preset(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preset", help="merge a preset (presets/*.yaml) into params.yaml",
        description="Deep-merge a preset's params blocks into params.yaml, keeping its comments "
                    "(blocks the preset lists under preset.replace are replaced whole). "
                    "`git checkout params.yaml` goes back to the embedded default.")
    parser.add_argument("preset", help="the preset file, e.g. presets/smollm2-gym.yaml")
    parser.add_argument("--params", default="params.yaml", help="the params file (default: params.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="print the merged params; write nothing")
    parser.set_defaults(run=_preset)


def _preset(args: argparse.Namespace) -> int:
    from honing.presets import apply_preset

    text, changed = apply_preset(args.preset, args.params, write=not args.dry_run)
    if args.dry_run:
        print(text, end="")
        return 0
    blocks = sorted({path.partition(".")[0] for path in changed})
    print(f"{args.params}: {len(changed)} value(s) from {args.preset} in {', '.join(blocks)} "
          "(`git diff` shows them; `dvc repro` runs them)")
    return 0


# ---- honing results ---------------------------------------------------------------------


@command("results")
def _add_results(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("results", help="the results table of a run (from metrics/report.json)")
    parser.add_argument("--report", default="metrics/report.json", help="the report stage's metrics file")
    parser.add_argument("--update", metavar="README", help="write the table into this file's results block")
    parser.add_argument("--detail", action="store_true",
                        help="also feedback parse rates, and tokens and seconds per stage (from metrics/ and "
                             "runtime/ beside the report's metrics/ folder)")
    parser.add_argument("--block", help="write into this named block instead of the results table, e.g. a "
                                        "preset's measured run: `<!-- NAME: written by `<this command>` -->`")
    parser.set_defaults(run=_results)


def _results(args: argparse.Namespace) -> int:
    from pathlib import Path

    from honing.results import BEGIN, END, block_markers, detail_table, results_table, update_block

    report = Path(args.report)
    if not report.is_file():
        raise HoningError(f"{report}: no such file (run the pipeline first: `dvc repro`)")
    summary = json.loads(report.read_text())
    # the project root: the folder that holds metrics/report.json's metrics/ folder
    table = detail_table(summary, report.resolve().parent.parent) if args.detail else results_table(summary)
    if args.update is None:
        print(table)
        return 0
    readme = Path(args.update)
    begin, end = BEGIN, END
    if args.block:
        command = f"honing results --report {args.report}{' --detail' if args.detail else ''} " \
                  f"--update {args.update} --block {args.block}"
        begin, end = block_markers(args.block, command)
    readme.write_text(update_block(readme.read_text(), table, begin, end))
    print(f"{readme}: {args.block or 'results'} block written from {report}")
    return 0


# ---- honing report, exp-table, inspect, compare -----------------------------------------


@command("report")
def _add_report(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="the run's HTML page (what the report stage writes)")
    parser.add_argument("--root", default=".", help="the project folder (default: .)")
    parser.add_argument("--out", default="report/index.html", help="the page (default: report/index.html)")
    parser.add_argument("--checkpoints", help="comma-separated (default: params.yaml's checkpoints:)")
    parser.add_argument("--samples", type=int, default=4, help="refinements shown per checkpoint (default: 4)")
    parser.set_defaults(run=_report)


def _report(args: argparse.Namespace) -> int:
    from honing.report.load import default_checkpoints, load_inputs
    from honing.report.page import render_page, write_page

    checkpoints = args.checkpoints.split(",") if args.checkpoints else default_checkpoints(args.root)
    path = write_page(render_page(load_inputs(args.root, checkpoints, args.samples)), args.out)
    print(f"{path}: the report of {', '.join(checkpoints)}")
    return 0


@command("exp-table")
def _add_exp_table(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("exp-table", help="a markdown table of experiments from `dvc exp show --json`")
    parser.add_argument("--params", default="", help="params columns, comma-separated (train.method)")
    parser.add_argument("--metrics", default="", help="metrics columns, comma-separated (it2.accuracy_direct; "
                                                      "FILE:KEY where several files have KEY)")
    parser.add_argument("--exp", default="", help="experiment name patterns, comma-separated (default: all)")
    parser.add_argument("--baseline", action="store_true", help="add the baseline commit's row")
    parser.add_argument("--sort", help="sort by this column (default: experiment name)")
    parser.add_argument("--mean", action="store_true", help="add a row with each metrics column's mean")
    parser.add_argument("--json", dest="json_file", help="read this saved `dvc exp show --json` output")
    parser.add_argument("--update", metavar="README", help="write the table into this file's block")
    parser.add_argument("--block", help="the block's name: <!-- NAME: ... --> ... <!-- /NAME -->")
    parser.set_defaults(run=_exp_table)


def _exp_table(args: argparse.Namespace) -> int:
    import shlex
    from pathlib import Path

    from honing import exp_table

    def split(text: str) -> list[str]:
        return [part.strip() for part in text.split(",") if part.strip()]

    shown = json.loads(Path(args.json_file).read_text()) if args.json_file else exp_table.exp_show()
    table = exp_table.table(shown, split(args.params), split(args.metrics), split(args.exp), args.baseline, args.sort,
                                 args.mean)
    if args.update is None:
        print(table)
        return 0
    if not args.block:
        raise HoningError("--update needs --block NAME (the README's <!-- NAME: ... --> block)")
    readme = Path(args.update)
    options = [("--params", args.params), ("--metrics", args.metrics), ("--exp", args.exp), ("--sort", args.sort),
               ("--json", args.json_file), ("--update", args.update), ("--block", args.block)]
    command = shlex.join(["honing", "exp-table", *(["--baseline"] if args.baseline else []),
                          *(["--mean"] if args.mean else []),
                          *(part for flag, value in options if value for part in (flag, value))])
    source = f"`{args.json_file}` (saved `dvc exp show --json` output)" if args.json_file else "`dvc exp show --json`"
    readme.write_text(exp_table.update_block(readme.read_text(), args.block, table, command, source))
    print(f"{readme}: block {args.block!r} written")
    return 0


@command("inspect")
def _add_inspect(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("inspect", help="an artifact's counts, schema and a few rows side by side")
    parser.add_argument("artifact", help="a name (pairs@it1, sft@train_meta, evaluate@it2, prompts@eval, "
                                         "meta_corpus, quarantine@prepare) or a path")
    parser.add_argument("--rows", type=int, default=3, help="rows shown side by side (default: 3)")
    parser.add_argument("--width", type=int, default=120, help="text width (default: 120)")
    parser.add_argument("--root", default=".", help="the project folder (default: .)")
    parser.set_defaults(run=_inspect)


def _inspect(args: argparse.Namespace) -> int:
    import importlib

    from honing.inspect import inspect

    schemas = importlib.import_module("schemas.registry").ARTIFACTS  # the project's, by name, as for publish
    print(inspect(args.artifact, args.root, args.rows, args.width, schemas))
    return 0


@command("compare")
def _add_compare(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="per-prompt wins, losses and ties of two checkpoints")
    parser.add_argument("a", help="a checkpoint (it1) or its evaluation rows (a .parquet path)")
    parser.add_argument("b", help="the checkpoint to compare it with")
    parser.add_argument("--examples", type=int, default=2, help="prompts shown per kind of disagreement")
    parser.add_argument("--root", default=".", help="the project folder (default: .)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(run=_compare)


def _compare(args: argparse.Namespace) -> int:
    from honing.compare import compare, eval_prompts, render

    result = compare(args.a, args.b, args.root, args.examples)
    print(json.dumps(result, indent=2) if args.json else render(result, eval_prompts(args.root)))
    return 0


# ---- honing publish ---------------------------------------------------------------------


@command("publish")
def _add_publish(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "publish", help="artifacts to a Hub dataset repo, or a checkpoint to a Hub model repo, with cards",
        description="Publish artifacts (one config each) to a Hugging Face dataset repo, or a checkpoint to a "
                    "model repo, with a card carrying provenance (git, dvc.lock md5s and params, models, "
                    "tokens, cost, schema) and lineage links (publish.lock.json). The token is $HF_TOKEN. "
                    "An unchanged repo gets no commit.")
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                        help="a name (meta_corpus, sft@it1, sft@train_meta, pairs@it2, feedback@it1, "
                             "refinements@it1, evaluate@it2, model@it1) or a path")
    parser.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the repo to publish to")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--to-dir", metavar="DIR", help="write the repo's exact folder into DIR; push nothing")
    mode.add_argument("--dry-run", action="store_true", help="print the files, sizes and commit message; push nothing")
    parser.add_argument("--endpoint", help="the Hub's URL (default: $HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    parser.add_argument("--license", default="apache-2.0", help="the card's license (default: apache-2.0)")
    parser.add_argument("--project", default=".", help="the DVC project's root (default: .)")
    parser.set_defaults(run=_publish)


def _publish(args: argparse.Namespace) -> int:
    import importlib

    from honing.publish.lineage import LOCK_NAME, PublishLock
    from honing.publish.project import Project
    from honing.publish.push import Options, check_repo_id, describe, hub_api, plan, push, token_from_env, write_folder

    check_repo_id(args.repo)
    token = None if args.to_dir or args.dry_run else token_from_env()
    # Schemas are the project's, not the library's: looked up by name when the command
    # runs, as a stage passes its own in.
    schemas = importlib.import_module("schemas.registry").ARTIFACTS
    project = Project(args.project)
    lock = PublishLock(project.root / LOCK_NAME)
    options = Options(license=args.license, private=not args.public, endpoint=args.endpoint)
    p = plan(project, lock, schemas, args.repo, args.artifacts, options)
    if args.dry_run:
        print(describe(p))
    elif args.to_dir:
        write_folder(p, args.to_dir)
        print(f"{args.to_dir}: {p.repo_type} repo {p.repo_id}, {len(p.files) + 1} files, {p.size:,} bytes")
    else:
        outcome = push(p, hub_api(options.endpoint, token), lock, options)
        what = (f"pushed {len(outcome.pushed)} file(s)" + (f", deleted {len(outcome.deleted)}" if outcome.deleted
                                                            else "") if outcome.pushed else "unchanged, nothing pushed")
        print(f"{p.repo_type} repo {p.repo_id}: {what}; revision {outcome.revision} (recorded in {lock.path.name})")
    return 0


# ---- entry point ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="honing", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS.values():
        add(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (HoningError, ValueError) as err:  # errors meant for people: one line, no traceback
        print(f"honing {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
