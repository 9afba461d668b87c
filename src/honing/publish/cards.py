"""The dataset card and the model card: YAML metadata the Hub reads (license, task,
configs with data files and features, size, tags; `datasets` and `base_model` on a
model) and a body a person reads: what it is, how it was made, how to load it and
train on it with TRL, where it came from and what came of it.

Every provenance field is in both places: the body for people, and the `honing:`
block of the metadata for tools (the publish step reads its `fingerprint` back to
tell an unchanged repo from a changed one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from honing.publish.lineage import DatasetLinks, Link, ModelLinks
from honing.publish.project import Artifact, Checkpoint, Project

TAGS = ["honing", "synthetic", "self-refinement", "critique"]
CALL_KEYS = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")


@dataclass
class DatasetEntry:
    """One artifact as it goes into a dataset repo: one config."""

    artifact: Artifact
    file: str  # its path in the repo
    md5: str
    rows: int
    iterations: list[str]
    stage: str
    out: dict[str, Any]  # its dvc.lock output entry
    schema_name: str
    schema: dict[str, Any]
    features: list[dict[str, Any]]
    num_bytes: int
    size: int
    links: DatasetLinks


@dataclass
class ModelEntry:
    checkpoint: Checkpoint
    md5: str
    stage: str
    files: list[str]
    links: ModelLinks
    evaluation: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> its accuracy metrics


@dataclass
class Provenance:
    git_revision: str
    git_dirty: bool
    stages: dict[str, dict[str, Any]]  # name -> cmd, params, metrics
    roles: list[dict[str, Any]]  # stage, role, model, backend, and its calls
    totals: dict[str, Any]


def schema_info(schema) -> dict[str, Any]:
    """A pandera model's columns (type, nullable, unique, checks, description) as plain data."""
    model = schema.to_schema() if hasattr(schema, "to_schema") else schema
    columns = {}
    for name, col in model.columns.items():
        columns[name] = {"dtype": str(col.dtype), "nullable": bool(col.nullable), "unique": bool(col.unique),
                         "checks": [_check_text(c) for c in col.checks]}
        if col.description:
            columns[name]["description"] = col.description
    return {"columns": columns, "checks": [_check_text(c) for c in model.checks],
            "strict": bool(getattr(model, "strict", False))}


def _check_text(check) -> str:
    stats = {k: v for k, v in (check.statistics or {}).items() if v is not None}
    if check.name in ("isin", "str_length", "str_contains", "greater_than_or_equal_to", "less_than_or_equal_to",
                      "greater_than", "less_than", "in_range", "equal_to"):
        return f"{check.name}({', '.join(f'{k}={v!r}' for k, v in stats.items())})"
    return f"{check.name}: {check.error}" if check.error else check.name


def provenance(project: Project, stages: Iterable[str]) -> Provenance:
    """Every stage before and including `stages`: params, metrics, roles, calls."""
    names = sorted({s for stage in stages for s in project.upstream(stage)}, key=project.order.__getitem__)
    rows, info = [], {}
    for name in names:
        stage, metrics = project.stages[name], project.metrics(name)
        info[name] = {"cmd": stage.cmd, "params": stage.params, "metrics": metrics}
        rows += _roles(project, name, metrics)
    totals = {k: sum(r.get(k) or 0 for r in rows) for k in CALL_KEYS}
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    rev, dirty = project.git_revision()
    return Provenance(rev, dirty, info, rows, totals)


def _roles(project: Project, name: str, metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Who answered in a stage: the policy (the checkpoint it read, on its backend) and
    the critic (the name the stage reports, with its own calls when it has a model)."""
    stage, base, rows = project.stages[name], name.partition("@")[0], []
    params = stage.params
    if "policy" in params:
        models = [project.checkpoint(d["path"]).label for d in stage.deps if project.is_checkpoint(d["path"])]
        rows.append({"stage": name, "role": "policy", "model": ", ".join(models) or "?",
                     "backend": (params["policy"] or {}).get("backend"), **_calls(metrics.get("calls"))})
    if "critic" in metrics:
        spec = dict((params.get(base) or {}).get("critic") or {}) if isinstance(params.get(base), Mapping) else {}
        for key, value in params.items():  # an iteration's override block wins
            if key.startswith("iterations.") and key.endswith(f".{base}") and isinstance(value, Mapping):
                spec.update(value.get("critic") or {})
        spec = spec or dict(params.get("critic") or {})
        rows.append({"stage": name, "role": "critic", "model": metrics["critic"],
                     "backend": spec.get("backend", "self"), **_calls(metrics.get("critic_calls"))})
    return rows


def _calls(calls: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: (calls or {}).get(k) for k in CALL_KEYS}


def size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                         (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")):
        if n < limit:
            return label
    return "10M<n<100M"


def render(metadata: Mapping[str, Any], body: str) -> str:
    return "---\n" + yaml.safe_dump(dict(metadata), sort_keys=False, allow_unicode=True, width=120) + "---\n\n" + body


def _prov_meta(prov: Provenance, git_revision: str, fingerprint: str, files: Mapping[str, str]) -> dict[str, Any]:
    return {"fingerprint": fingerprint, "git_revision": git_revision, "git_dirty": prov.git_dirty,
            "files": dict(sorted(files.items())), "calls": prov.totals, "models": prov.roles, "stages": prov.stages}


# ---- dataset card ------------------------------------------------------------------------------


def dataset_card(repo_id: str, license: str, entries: list[DatasetEntry], prov: Provenance, *,
                 git_revision: str, fingerprint: str, files: Mapping[str, str]) -> str:
    """README.md of a dataset repo; `files` maps each data file in the repo to its sha256."""
    kinds = {e.artifact.kind.name for e in entries}
    tags = TAGS + ["trl"] * bool(kinds & {"sft", "pairs"}) + ["sft"] * ("sft" in kinds) + \
        ["dpo", "preference"] * ("pairs" in kinds)
    metadata = {
        "license": license,
        "task_categories": ["text-generation"],
        "size_categories": [size_category(max(e.rows for e in entries))],
        "tags": tags,
        "pretty_name": repo_id.split("/")[-1],
        "configs": [{"config_name": e.artifact.config,
                     "data_files": [{"split": e.artifact.kind.split, "path": e.file.rsplit("/", 1)[0] + "/*.parquet"}]}
                    for e in entries],
        "dataset_info": [{"config_name": e.artifact.config, "features": e.features,
                          "splits": [{"name": e.artifact.kind.split, "num_bytes": e.num_bytes, "num_examples": e.rows}],
                          "download_size": e.size, "dataset_size": e.num_bytes} for e in entries],
        "honing": {**_prov_meta(prov, git_revision, fingerprint, files), "artifacts": {e.artifact.name: {
            "config": e.artifact.config, "path": e.artifact.path, "file": e.file, "md5": e.md5, "rows": e.rows,
            "iteration": e.iterations, "stage": e.stage, "dvc_out": e.out["path"], "dvc_md5": e.out["md5"],
            "schema": {"name": e.schema_name, **e.schema},
            "generated_by": [link.to_dict() for link in e.links.generated_by],
            "trained": [link.to_dict() for link in e.links.trained]} for e in entries}},
    }
    return render(metadata, _dataset_body(repo_id, entries, prov, git_revision))


def _dataset_body(repo_id: str, entries: list[DatasetEntry], prov: Provenance, git_revision: str) -> str:
    out = [f"# {repo_id.split('/')[-1]}", "",
           f"{len(entries)} artifact{'s' * (len(entries) != 1)} of a honing run, one config each. "
           "honing is a DVC pipeline for models that learn to critique and refine their own answers (SELF, SRT, "
           "EVOLVE): a policy answers prompts, a critic writes feedback, the policy refines its answers, rule "
           "filters keep the good ones, and the result becomes SFT records and preference pairs for the next "
           "checkpoint. Each file here is the pipeline's output byte for byte: its md5 is the one below.", "",
           "| config | artifact | what it is | rows | split | TRL format |", "|---|---|---|---|---|---|"]
    for e in entries:
        a = e.artifact
        out.append(f"| `{a.config}` | `{a.name}` | {a.kind.what} | {e.rows:,} | {a.kind.split} | "
                   f"{a.kind.trl or 'none (a record of the run)'} |")
    out += ["", "## Load it", "", "```python", "from datasets import load_dataset", ""]
    out += [f'{e.artifact.config} = load_dataset("{repo_id}", "{e.artifact.config}", split="{e.artifact.kind.split}")'
            for e in entries]
    out += ["```", ""]
    for e in entries:
        out += _trl_recipe(repo_id, e)
    out += ["## How it was made", ""]
    for e in entries:
        gen = "; ".join(link.markdown() for link in e.links.generated_by) or "no model (a rule or a seed)"
        its = ", ".join(e.iterations) or "n/a"
        out += [f"- `{e.artifact.name}`: written by stage `{e.stage}` (`{prov.stages[e.stage]['cmd']}`), "
                f"iteration {its}, {e.rows:,} rows; generated by {gen}."]
    out += ["", f"At git revision `{git_revision}`{' (uncommitted changes)' * prov.git_dirty}. The stages before "
            "it, in the order DVC ran them: " + " → ".join(f"`{s}`" for s in prov.stages) + ".", ""]
    out += _models_table(prov) + _params_details(prov)
    out += ["## Lineage", ""]
    for e in entries:
        out += [f"`{e.artifact.name}`:", ""]
        out += [f"- generated by {link.markdown()}" for link in e.links.generated_by] or ["- generated by no model"]
        out += [f"- trained {link.markdown()}" for link in e.links.trained]
        out += [""]
    out += ["## Provenance", "", "| config | file | md5 | DVC output | DVC md5 (dvc.lock) | rows | iteration |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| `{e.artifact.config}` | `{e.file}` | `{e.md5}` | `{e.out['path']}` | `{e.out['md5']}` | "
            f"{e.rows:,} | {', '.join(e.iterations)} |" for e in entries]
    out += ["", "## Schema", ""]
    for e in entries:
        out += [f"`{e.artifact.config}` follows `{e.schema_name}` (Pandera; strict: {e.schema['strict']}):", "",
                "| column | type | nullable | unique | checks | description |", "|---|---|---|---|---|---|"]
        out += [f"| `{n}` | {c['dtype']} | {c['nullable']} | {c['unique']} | {'; '.join(c['checks']) or '-'} | "
                f"{c.get('description', '')} |" for n, c in e.schema["columns"].items()]
        out += [f"- frame check: {c}" for c in e.schema["checks"]] + [""]
    return "\n".join(out).rstrip() + "\n"


def _trl_recipe(repo_id: str, e: DatasetEntry) -> list[str]:
    kind = e.artifact.kind.name
    if kind not in ("sft", "pairs"):
        return []
    model = next((link.repo_id for link in e.links.generated_by if link.repo_id), "<a causal LM on the Hub>")
    trainer, config = ("SFTTrainer", "SFTConfig") if kind == "sft" else ("DPOTrainer", "DPOConfig")
    return [f"## Train on `{e.artifact.config}` with TRL", "",
            f"`{e.artifact.config}` is in TRL's {e.artifact.kind.trl} format: `{trainer}` reads it as it is "
            "(the other columns are provenance and are ignored).", "", "```python",
            "from datasets import load_dataset", f"from trl import {config}, {trainer}", "",
            f'train = load_dataset("{repo_id}", "{e.artifact.config}", split="train")',
            f'trainer = {trainer}(model="{model}", train_dataset=train, args={config}(output_dir="out"))',
            "trainer.train()", "```", ""]


def _models_table(prov: Provenance) -> list[str]:
    out = ["### Models, critic, tokens and cost", "",
           "| stage | role | model | backend | requests | prompt tokens | completion tokens | est. cost (USD) |",
           "|---|---|---|---|---|---|---|---|"]
    for r in prov.roles:
        cells = [f"{r[k]:,}" if isinstance(r[k], int) else ("-" if r[k] is None else str(r[k])) for k in CALL_KEYS[:3]]
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        out.append(f"| `{r['stage']}` | {r['role']} | `{r['model']}` | {r['backend']} | {' | '.join(cells)} | {cost} |")
    t = prov.totals
    out += [f"| **all** | | | | {t['requests']:,} | {t['prompt_tokens']:,} | {t['completion_tokens']:,} | "
            f"{t['cost_usd']:.4f} |", "", "Costs are estimates from the roles' prices in params.yaml "
            "(0 for local models and rule critics).", ""]
    return out


def _params_details(prov: Provenance) -> list[str]:
    out = ["### Parameters of every stage (from dvc.lock)", ""]
    for name, s in prov.stages.items():
        params = yaml.safe_dump(s["params"], sort_keys=True, width=100).strip() if s["params"] else "{}"
        out += [f"<details><summary><code>{name}</code>: <code>{s['cmd']}</code></summary>", "", "```yaml", params,
                "```", "", "</details>", ""]
    return out


# ---- model card -----------------------------------------------------------------------------


def model_card(repo_id: str, license: str, entry: ModelEntry, prov: Provenance, *, base_source: str | None,
               git_revision: str, fingerprint: str, files: Mapping[str, str]) -> str:
    """README.md of a model repo; `base_source` is the Hub model the first checkpoint came from, if any."""
    links = entry.links
    datasets = sorted({link.repo_id for link in links.trained_on if link.repo_id})
    base = [link.repo_id for link in links.parents if link.repo_id] or ([base_source] if base_source else [])
    metadata: dict[str, Any] = {
        "license": license, "library_name": "transformers", "pipeline_tag": "text-generation",
        "tags": TAGS + ["trl"] + [m for m in ("sft", "dpo") if m in str(links.method or "")]}
    if base:
        metadata.update(base_model=base, base_model_relation="finetune")
    if datasets:
        metadata["datasets"] = datasets
    metadata["honing"] = {
        **_prov_meta(prov, git_revision, fingerprint, files),
        "checkpoint": {"name": entry.checkpoint.name, "path": entry.checkpoint.path, "stage": entry.stage,
                       "dvc_md5": entry.md5, "method": links.method, "files": entry.files},
        "trained_on": [link.to_dict() for link in links.trained_on],
        "parents": [link.to_dict() for link in links.parents],
        "generated": [link.to_dict() for link in links.generated],
        "evaluation": entry.evaluation}
    return render(metadata, _model_body(repo_id, entry, prov, base, git_revision))


def _model_body(repo_id: str, entry: ModelEntry, prov: Provenance, base: list[str], git_revision: str) -> str:
    ck, links = entry.checkpoint, entry.links
    out = [f"# {repo_id.split('/')[-1]}", "",
           f"Checkpoint `{ck.name}` of a honing run (`{ck.path}`, written by stage "
           f"`{entry.stage}`, method {links.method or 'n/a'}): a causal language model trained to answer, critique its "
           "own answers and refine them (SELF, SRT, EVOLVE). safetensors weights, tokenizer and chat template.", "",
           "## Use it", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
           f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")',
           f'model = AutoModelForCausalLM.from_pretrained("{repo_id}")',
           'messages = [{"role": "user", "content": "..."}]',
           "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
           "return_dict=True)",
           "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=96)[0]))", "```", "",
           "## Lineage", ""]
    out += [f"- started from {link.markdown()}" for link in links.parents] or (
        [f"- started from `{b}`" for b in base] or ["- trained from scratch (no parent checkpoint)"])
    out += [f"- trained on {link.markdown()}" for link in links.trained_on]
    out += [f"- generated {link.markdown()}" for link in links.generated]
    out += ["", "## Evaluation", ""]
    for stage, m in entry.evaluation.items():
        out.append(f"- `{stage}`: accuracy direct {m.get('accuracy_direct')}, after refinement "
                   f"{m.get('accuracy_refined')} (per round: {m.get('accuracy_per_round')})")
    if not entry.evaluation:
        out.append("No evaluation of this checkpoint in dvc.lock.")
    out += ["", "## How it was made", "",
            f"At git revision `{git_revision}`{' (uncommitted changes)' * prov.git_dirty}; DVC md5 of `{ck.path}`: "
            f"`{entry.md5}`. The stages, in the order DVC ran them: " + " → ".join(f"`{s}`" for s in prov.stages) + ".",
            "", "Files: " + ", ".join(f"`{f}`" for f in entry.files) + ".", ""]
    out += _models_table(prov) + _params_details(prov)
    return "\n".join(out).rstrip() + "\n"


def links_of(card_data: Mapping[str, Any]) -> list[Link]:
    """Every link a card's `honing:` block records (for tools walking the lineage)."""
    block = card_data.get("honing") or {}
    out = []
    for key in ("trained_on", "parents", "generated"):
        out += [Link(**item) for item in block.get(key) or []]
    for artifact in (block.get("artifacts") or {}).values():
        for key in ("generated_by", "trained"):
            out += [Link(**item) for item in artifact.get(key) or []]
    return out
