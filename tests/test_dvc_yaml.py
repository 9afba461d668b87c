"""dvc.yaml against the code: each stage's deps are its true import closure, its
params are what it reads, and every iteration can override every iteration stage."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from import_closure import ROOT, as_deps, closure, python_files

ITERATION_STAGES = ["generate", "critique", "refine", "filter", "build_sft", "build_pairs", "train"]
CODE_ROOTS = ("src/", "schemas", "stages")
TEMPLATES = "${templates}"
PROMPTS_MODULE = ROOT / "src/honing/method/prompts.py"


def stage_bodies(dvc: dict) -> dict[str, dict]:
    """stage name -> its definition (the `do:` body for a foreach family)."""
    return {name: stage.get("do", stage) for name, stage in dvc["stages"].items()}


def script_of(body: dict) -> str:
    m = re.match(r"python -m (stages\.\w+)\b", body["cmd"])
    assert m, f"cmd {body['cmd']!r} does not run a stage module"
    return m.group(1)


def code_dep_problems(dvc: dict) -> list[str]:
    """Every disagreement between a stage's code deps and its import closure."""
    problems = []
    for name, body in stage_bodies(dvc).items():
        module = script_of(body)
        needed = closure(module)
        deps = [d for d in body.get("deps", []) if d.startswith(CODE_ROOTS)]
        listed: set[Path] = set()
        for dep in deps:
            path = ROOT / dep
            if not path.exists():
                problems.append(f"{name}: dep {dep} does not exist")
            listed |= python_files(path)
        for path in sorted(needed - listed):
            problems.append(f"{name}: runs {path.relative_to(ROOT)}, which its deps do not list")
        for path in sorted(listed - needed):
            problems.append(f"{name}: lists {path.relative_to(ROOT)}, which it never imports")
        uses_templates = PROMPTS_MODULE in needed
        if uses_templates != (TEMPLATES in body.get("deps", [])):
            problems.append(f"{name}: renders prompt templates: {uses_templates}, "
                            f"lists {TEMPLATES}: {not uses_templates}")
        if problems and problems[-1].startswith(name):
            problems.append(f"{name}: expected code deps {as_deps(needed)}")
    return problems


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_lists_exactly_the_code_it_runs(dvc_yaml):
    problems = code_dep_problems(dvc_yaml)
    assert not problems, "\n".join(problems)


def test_a_stage_importing_an_unlisted_module_is_caught(dvc_yaml):
    body = dvc_yaml["stages"]["filter"]["do"]
    body["deps"] = [d for d in body["deps"] if d != "src/honing/method/filters.py"]
    assert "filter: runs src/honing/method/filters.py, which its deps do not list" in code_dep_problems(dvc_yaml)


def test_a_stage_listing_code_it_never_runs_is_caught(dvc_yaml):
    dvc_yaml["stages"]["report"]["deps"].append("src/honing/calls/cache.py")
    assert "report: lists src/honing/calls/cache.py, which it never imports" in code_dep_problems(dvc_yaml)


def test_imports_inside_functions_count_and_type_checking_ones_do_not(tmp_path, monkeypatch):
    import import_closure

    package = tmp_path / "stages"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "lazy.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                     "    import stages.hinted\ndef run():\n    import stages.used\n")
    for name in ("hinted", "used"):
        (package / f"{name}.py").write_text("")
    monkeypatch.setitem(import_closure.PACKAGES, "stages", tmp_path)
    assert {p.name for p in import_closure.closure("stages.lazy")} == {"__init__.py", "lazy.py", "used.py"}


def test_model_free_stages_import_no_model_call_code():
    # filter and build_pairs call a reward model or an LLM judge when their params name one
    for stage in ("prepare", "build_sft", "train", "train_meta", "report"):
        calls = [p for p in closure(f"stages.{stage}") if "calls" in p.relative_to(ROOT).parts]
        assert not calls, f"{stage} imports model-call code: {calls}"


def test_the_library_imports_neither_stages_nor_schemas():
    for path in (ROOT / "src/honing").rglob("*.py"):
        from import_closure import imported_names

        bad = [n for n in imported_names(path) if n.split(".")[0] in ("stages", "schemas")]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_iteration_stages_read_their_override_blocks_and_every_iteration_has_them(dvc_yaml):
    bodies = stage_bodies(dvc_yaml)
    for stage in ITERATION_STAGES:
        assert f"iterations.${{key}}.{stage}" in bodies[stage]["params"], stage
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for name, iteration in params["iterations"].items():
        missing = [s for s in ITERATION_STAGES if s not in iteration]
        assert not missing, f"iterations.{name} lacks override blocks {missing}"
