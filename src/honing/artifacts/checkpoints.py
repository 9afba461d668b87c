"""Checkpoints from anywhere, saved as one plain transformers folder.

A source is one of:
- a Hub id (`HuggingFaceTB/SmolLM2-135M-Instruct`, at an optional revision);
- a local checkpoint folder (config.json, weights, tokenizer);
- a `.gguf` file (llama.cpp's format, usually quantised), or a folder holding one;
- `package:<name>`, an installed Python package that ships a `.gguf` file.

`import_checkpoint` resolves the source, checks what can be checked before any
weight is read (a GGUF file's header, the chat template, whether the weights fit
in memory), loads it through transformers, and saves it as safetensors with its
tokenizer and chat template. A GGUF file is dequantised on load (transformers'
GGUF support, which needs the `gguf` package); transformers refuses to save a
GGUF-loaded model, so its weights move into a fresh model built from the same
config without the quantisation entry. The output is written to a temp folder
beside it and renamed when complete, so a failure leaves nothing that looks done.
"""

from __future__ import annotations

import copy
import math
import mmap
import os
import re
import shutil
import struct
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from honing.errors import HoningError

FORMS = ("hub", "folder", "gguf", "package")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
HUB_TIMEOUT_S = 10.0  # one look-up; transformers' own downloads retry for ~25 s on a dead network
# A conversation every chat template must render, identically before and after saving.
PROBE_CONVERSATION = (
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5"},
    {"role": "user", "content": "And 4 + 4?"},
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


class CheckpointError(HoningError):
    """A source that cannot become the pipeline's checkpoint; the message says why."""


@dataclass(frozen=True)
class CheckpointConfig:
    source: str
    revision: str | None = None  # Hub ids: a branch, tag or commit
    gguf_file: str | None = None  # which .gguf, where a package, folder or Hub repo holds several
    dtype: str = "float32"  # of the saved weights
    max_memory_fraction: float = 0.5  # the weights may take at most this share of available memory

    def __post_init__(self):
        if not isinstance(self.source, str) or not self.source.strip():
            raise ValueError(f"source must be a non-empty string, got {self.source!r}")
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}, got {self.dtype!r}")
        fraction = self.max_memory_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
            raise ValueError(f"max_memory_fraction must be a number in (0, 1], got {fraction!r}")


@dataclass(frozen=True)
class ResolvedSource:
    """A source made concrete: what transformers loads."""

    form: str  # hub | folder | gguf | package: what the source string named
    location: str  # a Hub id, or a local folder
    gguf_file: str | None = None  # the GGUF weights inside `location` (then a local folder)
    revision: str | None = None  # hub: the commit

    @property
    def gguf_path(self) -> Path | None:
        return Path(self.location) / self.gguf_file if self.gguf_file else None


# ---------------------------------------------------------------- resolving a source


def resolve_source(source: str, revision: str | None = None, gguf_file: str | None = None) -> ResolvedSource:
    """Which form `source` takes and where its files are (Hub ids: checked on the Hub
    or in its cache, nothing downloaded but a named GGUF file)."""
    if source.startswith("package:"):
        return _in_folder("package", *_package_dirs(source.removeprefix("package:")), gguf_file=gguf_file,
                          revision=revision, where=source)
    path = Path(source).expanduser()
    if path.is_file():
        _no_revision(revision, source)
        if gguf_file:
            raise CheckpointError(f"gguf_file applies to folders, packages and Hub repos; source {source!r} is a file")
        return ResolvedSource("gguf", str(path.parent), path.name)
    if path.is_dir():
        if (path / "config.json").is_file() and not gguf_file:
            _no_revision(revision, source)
            return ResolvedSource("folder", str(path))
        return _in_folder("folder", path, gguf_file=gguf_file, revision=revision, where=source)
    if _HUB_ID.fullmatch(source) and ".." not in source and "--" not in source and not source.endswith(".gguf"):
        return _resolve_hub(source, revision, gguf_file)
    raise CheckpointError(f"no such file or folder: {source!r} (a source is a Hub id, a checkpoint folder, "
                          f"a .gguf file or package:<name>)")


def _no_revision(revision: str | None, source: str) -> None:
    if revision:
        raise CheckpointError(f"revision applies to Hub ids; source {source!r} is local")


def _package_dirs(name: str) -> tuple[Path, ...]:
    """The folders of an installed package, found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name.replace("-", "_"))
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise CheckpointError(f"no installed Python package {name!r} (source package:{name})")
    if not spec.submodule_search_locations:  # a single-file module ships no data files
        raise CheckpointError(f"package:{name} ships no .gguf file ({spec.origin} is a single module)")
    return tuple(Path(p) for p in spec.submodule_search_locations)


def _in_folder(form: str, *folders: Path, gguf_file: str | None, revision: str | None, where: str) -> ResolvedSource:
    """The one .gguf file under `folders` (or the one `gguf_file` names)."""
    _no_revision(revision, where)
    found = sorted({(p.relative_to(d).as_posix(), d) for d in folders for p in d.rglob("*.gguf") if p.is_file()})
    names = [name for name, _ in found]
    places = ", ".join(str(d) for d in folders)
    if gguf_file:
        matches = [(n, d) for n, d in found if gguf_file in (n, Path(n).name)]
        if len(matches) != 1:
            held = f"it holds {', '.join(names)}" if names else "it holds no .gguf file"
            raise CheckpointError(f"{where} has no single gguf_file {gguf_file!r} ({places}); {held}")
        found = matches
    elif not found:
        what = "ships no .gguf file" if form == "package" else "holds no config.json and no .gguf file"
        raise CheckpointError(f"{where} {what} ({places})")
    elif len(found) > 1:
        raise CheckpointError(f"{where} holds several .gguf files ({', '.join(names)}); set gguf_file to one")
    path = found[0][1] / found[0][0]
    return ResolvedSource(form, str(path.parent), path.name)


def _resolve_hub(repo: str, revision: str | None, gguf_file: str | None) -> ResolvedSource:
    from huggingface_hub import constants, model_info
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    at = f"{repo!r}" + (f" at revision {revision!r}" if revision else "")
    local = f"no local path {repo!r} exists either"
    if constants.is_offline_mode():
        cached = _from_hub_cache(repo, revision, gguf_file)
        if cached is None:
            raise CheckpointError(f"{at} is a Hub id and the Hub is offline (HF_HUB_OFFLINE=1) with no copy in "
                                  f"its cache ({constants.HF_HUB_CACHE}); {local}")
        return cached
    try:
        info = model_info(repo, revision=revision, timeout=HUB_TIMEOUT_S)
    except GatedRepoError as e:
        raise CheckpointError(f"{at} is gated on the Hub: accept its terms there and log in (hf auth login)") from e
    except RepositoryNotFoundError as e:
        raise CheckpointError(f"no model {repo!r} on the Hub at {constants.ENDPOINT} (or it is private: "
                              f"log in with hf auth login); {local}") from e
    except RevisionNotFoundError as e:
        raise CheckpointError(f"the Hub has no revision {revision!r} of {repo!r}") from e
    except HfHubHTTPError as e:
        raise CheckpointError(f"the Hub answered {at} with an error: {_one_line(e)}") from e
    except Exception as e:  # no network: httpx2's transport errors, OSError
        if not _is_network_error(e):
            raise
        cached = _from_hub_cache(repo, revision, gguf_file)
        if cached is not None:
            return cached
        raise CheckpointError(f"cannot reach the Hub at {constants.ENDPOINT} for {at} ({type(e).__name__}: "
                              f"{_one_line(e)}) and its cache holds no copy; {local}") from e
    files = [s.rfilename for s in info.siblings or []]
    if gguf_file is None and "config.json" not in files and any(f.endswith(".gguf") for f in files):
        ggufs = ", ".join(f for f in files if f.endswith(".gguf"))
        raise CheckpointError(f"Hub repo {repo!r} holds GGUF files ({ggufs}) and no config.json; set gguf_file to one")
    if gguf_file is None:
        return ResolvedSource("hub", repo, revision=info.sha)
    from huggingface_hub import hf_hub_download

    path = Path(hf_hub_download(repo, gguf_file, revision=info.sha))
    return ResolvedSource("hub", str(path.parent), path.name, info.sha)


def _from_hub_cache(repo: str, revision: str | None, gguf_file: str | None) -> ResolvedSource | None:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        if gguf_file:
            path = Path(hf_hub_download(repo, gguf_file, revision=revision, local_files_only=True))
        else:
            path = Path(snapshot_download(repo, revision=revision, local_files_only=True)) / "config.json"
    except LocalEntryNotFoundError:
        return None
    if not path.is_file():
        return None
    commit = path.parts[path.parts.index("snapshots") + 1] if "snapshots" in path.parts else None
    if gguf_file:
        return ResolvedSource("hub", str(path.parent), path.name, commit)
    return ResolvedSource("hub", str(path.parent), revision=commit)


def _is_network_error(e: Exception) -> bool:
    if isinstance(e, OSError | TimeoutError):
        return True
    try:
        import httpx2
    except ImportError:
        return False
    return isinstance(e, httpx2.TransportError)


# ---------------------------------------------------------------- GGUF headers


@dataclass(frozen=True)
class GGUFHeader:
    """What a GGUF file's header says, read without touching its tensor data."""

    metadata: dict[str, Any]  # scalar and string values (arrays such as the vocabulary are skipped)
    tensor_types: dict[str, int]  # ggml type name -> number of tensors
    parameters: int

    @property
    def quantization(self) -> str:
        """llama.cpp's name of the file type (Q4_1, Q8_0, F16, ...), else the commonest tensor type."""
        import gguf

        file_type = self.metadata.get("general.file_type")
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            quantised = {k: v for k, v in self.tensor_types.items() if k != "F32"} or self.tensor_types
            return max(quantised, key=quantised.get)


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    """Little-endian reads from a buffer; reading past its end raises struct.error."""

    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def read(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return value

    def skip(self, n: int) -> None:
        self.pos += n
        if self.pos > len(self.buf):
            raise struct.error("past the end")

    def string(self) -> str:
        n = self.read("Q")
        self.skip(n)
        return bytes(self.buf[self.pos - n:self.pos]).decode("utf-8", errors="replace")

    def value(self, kind: int, keep: bool = True):
        if kind in _SCALARS:
            return self.read(_SCALARS[kind])
        if kind == _STRING:
            if keep:
                return self.string()
            self.skip(self.read("Q"))
            return None
        if kind == _ARRAY:
            item, count = self.read("I"), self.read("Q")
            if item in _SCALARS:
                self.skip(count * struct.calcsize(_SCALARS[item]))
            else:
                for _ in range(count):
                    self.value(item, keep=False)
            return None
        raise struct.error(f"unknown value type {kind}")


def read_gguf_header(path: str | Path) -> GGUFHeader:
    """The header of a GGUF file, checked: the magic, the version, every tensor's type,
    and that every tensor's bytes lie inside the file (a truncated file fails here, in
    milliseconds, not minutes into dequantising)."""
    import gguf

    path = Path(path)
    size = path.stat().st_size
    with path.open("rb") as f:
        magic = f.read(4)
        if not magic:
            raise CheckpointError(f"{path} is empty, not a GGUF model")
        if magic != b"GGUF":
            raise CheckpointError(f"{path} is not a GGUF model: it starts with {magic!r}, a GGUF file with b'GGUF'")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf)
            cur.skip(4)
            try:
                version = cur.read("I")
                if version not in (2, 3):
                    raise CheckpointError(f"{path}: GGUF version {version} is not supported (expected 2 or 3)")
                n_tensors, n_values = cur.read("Q"), cur.read("Q")
                metadata = {}
                for _ in range(n_values):
                    key = cur.string()
                    metadata[key] = cur.value(cur.read("I"))
                tensors = []
                for _ in range(n_tensors):
                    name, n_dims = cur.string(), cur.read("I")
                    if n_dims > 8:
                        raise struct.error(f"tensor {name!r} has {n_dims} dimensions")
                    dims = [cur.read("Q") for _ in range(n_dims)]
                    tensors.append((name, dims, cur.read("I"), cur.read("Q")))
            except struct.error as e:
                raise CheckpointError(f"{path} is not a complete GGUF model: its header is cut short or corrupt "
                                      f"near byte {cur.pos:,} (the file has {size:,} bytes)") from e
    if metadata.get("general.type", "model") != "model":
        raise CheckpointError(f"{path} is a GGUF {metadata['general.type']}, not a model")
    if not tensors:
        raise CheckpointError(f"{path} holds no tensors (a vocabulary-only GGUF file?), not a model")
    if int(metadata.get("split.count") or 1) > 1:
        raise CheckpointError(f"{path} is one part of a split GGUF model ({metadata['split.count']} parts); "
                              f"merge them into one file first (llama-gguf-split --merge)")
    alignment = int(metadata.get("general.alignment") or gguf.GGUF_DEFAULT_ALIGNMENT)
    data_start = math.ceil(cur.pos / alignment) * alignment
    types: Counter[str] = Counter()
    parameters = 0
    for name, dims, kind, offset in tensors:
        try:
            ggml_type = gguf.GGMLQuantizationType(kind)
        except ValueError:
            raise CheckpointError(f"{path}: tensor {name!r} has an unknown ggml type {kind}") from None
        block, type_size = gguf.GGML_QUANT_SIZES[ggml_type]
        n = math.prod(dims)
        end = data_start + offset + n // block * type_size
        if end > size:
            raise CheckpointError(f"{path} is truncated: tensor {name!r} ends at byte {end:,}, "
                                  f"the file has {size:,} bytes")
        types[ggml_type.name] += 1
        parameters += n
    return GGUFHeader(metadata, dict(types), parameters)


# ---------------------------------------------------------------- memory


def available_memory() -> int:
    """Bytes this process may still allocate: the system's available memory, capped by
    a cgroup limit where one is set (containers)."""
    import psutil

    available = psutil.virtual_memory().available
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit, usage = (Path(p).read_text().strip() for p in (limit_file, usage_file))
            if limit != "max" and int(limit) < 1 << 60:
                available = min(available, int(limit) - int(usage))
        except (OSError, ValueError):
            continue
    return available


def check_fits(where: str, parameters: int, dtype: str, fraction: float, available: int | None = None) -> None:
    """Stop before loading weights that would not fit: parameters x bytes per parameter
    against `fraction` of the available memory (loading needs about twice the weights)."""
    available = available_memory() if available is None else available
    need, allowed = parameters * DTYPE_BYTES[dtype], fraction * available
    if need > allowed:
        raise CheckpointError(
            f"{where} is too big for this machine: {parameters / 1e6:.1f} M parameters x {DTYPE_BYTES[dtype]} bytes "
            f"({dtype}) = {_size(need)}, above max_memory_fraction {fraction} x {_size(available)} available "
            f"= {_size(allowed)}")


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


# ---------------------------------------------------------------- loading and saving


def import_checkpoint(cfg: CheckpointConfig, out_dir: str | Path) -> dict[str, Any]:
    """Resolve, check, load and save `cfg.source` as a transformers folder at `out_dir`.

    Returns what it found: the source, its resolved form, parameters, dtype, whether a
    chat template exists, the GGUF quantisation type, and the seconds it took to load
    and to save (the `_seconds` keys)."""
    source = resolve_source(cfg.source, cfg.revision, cfg.gguf_file)
    where = repr(cfg.source)
    t0 = time.time()
    if source.gguf_path is not None:
        header = read_gguf_header(source.gguf_path)
        if not header.metadata.get("tokenizer.chat_template"):
            raise _no_chat_template(where)
        check_fits(where, header.parameters, "float32", cfg.max_memory_fraction)  # dequantised to float32
        tokenizer = _load_tokenizer(source, where)
        model = _load_gguf(source, where)
        if cfg.dtype != "float32":
            model = model.to(_torch_dtype(cfg.dtype))
    else:
        header = None
        tokenizer = _load_tokenizer(source, where)
        check_fits(where, _count_parameters(source, where), cfg.dtype, cfg.max_memory_fraction)
        model = _load_transformers(source, cfg.dtype, where)
    t1 = time.time()
    save_checkpoint(model, tokenizer, out_dir)
    metrics: dict[str, Any] = {
        "source": cfg.source,
        "form": source.form,
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": cfg.dtype,
        "chat_template": bool(tokenizer.chat_template),
    }
    if source.revision:
        metrics["revision"] = source.revision
    if header is not None:
        metrics.update(gguf_file=source.gguf_file, quantization=header.quantization)
    return metrics | {"load_seconds": round(t1 - t0, 1), "save_seconds": round(time.time() - t1, 1)}


def save_checkpoint(model, tokenizer, out_dir: str | Path) -> Path:
    """Save model (safetensors) and tokenizer to a temp folder beside `out_dir`, check
    that the chat template renders the same from the saved folder, then rename."""
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        saved = render_probe(AutoTokenizer.from_pretrained(tmp), str(out_dir))
        if saved != render_probe(tokenizer, "the source"):
            raise CheckpointError(f"{out_dir}: the saved tokenizer renders the chat template differently "
                                  f"from the source's")
        os.chmod(tmp, 0o755)  # mkdtemp makes folders private, and transformers its weight files
        for path in tmp.iterdir():
            os.chmod(path, 0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def render_probe(tokenizer, where: str) -> str:
    """PROBE_CONVERSATION through the tokenizer's chat template, ready for the reply."""
    try:
        return tokenizer.apply_chat_template(list(PROBE_CONVERSATION), tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja2 errors raised by the template itself
        raise CheckpointError(f"{where}: the chat template cannot render a user/assistant conversation: "
                              f"{_one_line(e)}") from e


def _no_chat_template(where: str) -> CheckpointError:
    return CheckpointError(f"{where} has no chat template; honing talks to its policy in chat messages, so the "
                           f"base needs one (an instruct model, or a chat_template.jinja beside the tokenizer)")


def _load_tokenizer(source: ResolvedSource, where: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, gguf_file=source.gguf_file,
                                                  revision=None if source.gguf_file else source.revision)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: cannot load its tokenizer: {_one_line(e)}") from e
    if not tokenizer.chat_template:
        raise _no_chat_template(where)
    render_probe(tokenizer, where)
    return tokenizer


def _count_parameters(source: ResolvedSource, where: str) -> int:
    """Parameters of the model its config describes, counted on the meta device (no memory)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(source.location, revision=source.revision)
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(config)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: not a causal language model transformers can build: {_one_line(e)}") from e
    return sum(p.numel() for p in model.parameters())


def _load_transformers(source: ResolvedSource, dtype: str, where: str):
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(source.location, revision=source.revision,
                                                    dtype=_torch_dtype(dtype)).eval()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{where}: cannot load its weights: {_one_line(e)}") from e


def _load_gguf(source: ResolvedSource, where: str):
    """The GGUF weights dequantised to float32, in a plain model that can be saved."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    try:
        loaded = AutoModelForCausalLM.from_pretrained(source.location, gguf_file=source.gguf_file,
                                                      dtype=torch.float32)
    except (OSError, ValueError, KeyError) as e:  # e.g. an architecture transformers cannot read from GGUF
        raise CheckpointError(f"{where}: transformers cannot load {source.gguf_path}: {_one_line(e)}") from e
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with init_empty_weights():  # parameters on the meta device: the weights are assigned, not copied
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = copy.deepcopy(loaded.generation_config)
    return model.eval()


def _torch_dtype(name: str):
    import torch

    return getattr(torch, name)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())
