"""Presets: a YAML file of params blocks that `honing preset` merges into params.yaml.

A preset states only what differs from the embedded default (`presets/*.yaml`), so
knobs added to params.yaml later reach preset runs too. Merging is deep: a mapping
in the preset merges key by key into params.yaml's, anything else replaces the
value. Where a block's old keys would not apply (another task mix, another
critic), the preset lists the block under `preset: {replace: [dotted.path, ...]}`
and it is replaced whole. The file is edited in place through ruamel's round trip,
so params.yaml keeps its comments and layout and the preset's own comments (its GPU
sizes, its alternatives) come along with the values they sit beside; `git diff
params.yaml` shows what the preset changed and `git checkout params.yaml` switches
back to the default.

A preset may only set blocks that params.yaml has (a typo is an error, and nothing
is written); the result is written to a temp file and renamed.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from honing.errors import HoningError

META = "preset"  # the preset's own block: {replace: [...]}; not written to params.yaml


class PresetFileError(HoningError, ValueError):
    """A preset that cannot be applied (one line, params.yaml untouched)."""


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments, order and quoting kept
    yaml.preserve_quotes = True
    yaml.width = 120
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.representer.add_representer(  # `null` as written, not an empty value
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def _load(path: Path) -> Any:
    from ruamel.yaml.error import YAMLError

    if not path.is_file():
        raise PresetFileError(f"{path}: no such file")
    try:
        return _yaml().load(path.read_text())
    except YAMLError as e:
        raise PresetFileError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e


def _replace_paths(preset: Mapping[str, Any], where: Path) -> set[str]:
    meta = preset.get(META) or {}
    unknown = sorted(set(meta) - {"replace"}) if isinstance(meta, Mapping) else ["(not a mapping)"]
    if unknown:
        raise PresetFileError(f"{where}: `{META}:` takes only `replace: [dotted.path, ...]`; found {unknown}")
    paths = meta.get("replace") or []
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise PresetFileError(f"{where}: `{META}.replace` must be a list of dotted paths, found {paths!r}")
    return set(paths)


def merge_into(base: Any, preset: Mapping[str, Any], replace: set[str] = frozenset(), prefix: str = "") -> list[str]:
    """Merge `preset` into the mapping `base` in place; the dotted paths it set."""
    changed = []
    for key, value in preset.items():
        path = f"{prefix}{key}"
        old = base.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping) and path not in replace:
            changed += merge_into(old, value, replace, f"{path}.")
        else:
            base[key] = value
            _carry_comment(base, preset, key)
            changed.append(path)
    return changed


def _carry_comment(base: Any, preset: Any, key: str) -> None:
    """The preset's end-of-line comment on `key` (its GPU size, its alternative), where
    params.yaml has none there; params.yaml's own comments stay as they are."""
    ours, theirs = getattr(base, "ca", None), getattr(preset, "ca", None)
    if ours is None or theirs is None or key not in theirs.items:
        return
    if key in ours.items and any(ours.items[key]):
        return
    tokens = list(theirs.items[key])
    for i, token in enumerate(tokens):  # its own lines only: not what follows a blank line (a section)
        if token is not None and hasattr(token, "value"):
            own = token.value.split("\n\n")[0].rstrip("\n") + "\n"
            tokens[i] = type(token)(own, token.start_mark, token.end_mark)
    ours.items[key] = tokens


def apply_preset(preset_path: str | Path, params_path: str | Path = "params.yaml", *,
                 write: bool = True) -> tuple[str, list[str]]:
    """Merge the preset into params.yaml; (the new params.yaml text, the paths set).
    `write=False` changes nothing on disk (a dry run)."""
    preset_path, params_path = Path(preset_path), Path(params_path)
    preset, params = _load(preset_path), _load(params_path)
    if not isinstance(preset, Mapping) or not preset:
        raise PresetFileError(f"{preset_path}: expected a mapping of params blocks")
    if not isinstance(params, Mapping):
        raise PresetFileError(f"{params_path}: expected a mapping of params blocks")
    replace = _replace_paths(preset, preset_path)
    blocks = {k: v for k, v in preset.items() if k != META}
    unknown = sorted(set(blocks) - set(params))
    if unknown:
        raise PresetFileError(f"{preset_path}: block(s) {', '.join(unknown)} are not in {params_path} "
                              f"(expected some of {', '.join(params)})")
    missing = sorted(p for p in replace if not _has(blocks, p))
    if missing:
        raise PresetFileError(f"{preset_path}: `{META}.replace` names {', '.join(missing)}, which the preset "
                              "does not set")
    for key in list(preset):
        if key == META:
            del preset[key]
    changed = merge_into(params, preset, replace)
    buf = io.StringIO()
    _yaml().dump(params, buf)
    text = buf.getvalue()
    if write:
        fd, tmp = tempfile.mkstemp(dir=params_path.parent, prefix=f".{params_path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, params_path)
    return text, changed


def _has(blocks: Mapping[str, Any], dotted: str) -> bool:
    node: Any = blocks
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False
        node = node[part]
    return True
