"""The project files a stage script runs: its import closure within the project.

Static: every `import` and `from ... import` in a module, at any depth (imports
inside functions count, since the code may take that path), except those under
`if TYPE_CHECKING:`. Importing `a.b.c` also runs `a/__init__.py` and
`a/b/__init__.py`, so those count too. Only the project's own packages are
followed: `honing` (src/honing), `schemas` and `stages`.

`python tests/import_closure.py` prints each stage's closure, for pasting into
dvc.yaml's deps.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"honing": ROOT / "src", "schemas": ROOT, "stages": ROOT}


def module_path(name: str) -> Path | None:
    """The file of module `name` in the project, or None for anything else."""
    top = name.split(".")[0]
    if top not in PACKAGES:
        return None
    base = PACKAGES[top].joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path) -> set[str]:
    """Dotted names a module imports (for `from a import b`: both `a` and `a.b`)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return names


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def closure(module: str) -> set[Path]:
    """Every project file that importing (or running) `module` may execute."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        for name in _with_parents(todo.pop()):
            path = module_path(name)
            if path is None or path in seen:
                continue
            seen.add(path)
            todo.extend(imported_names(path))
    return seen


def python_files(entry: Path) -> set[Path]:
    """A dvc.yaml dep as the Python files it covers (a folder: every file under it)."""
    return set(entry.rglob("*.py")) if entry.is_dir() else {entry}


def as_deps(paths: set[Path]) -> list[str]:
    """`paths` as dvc.yaml deps: a folder wherever every Python file under it is in."""
    folders = sorted({p.parent for p in paths}, key=lambda d: len(d.parts))
    whole: list[Path] = []
    for folder in folders:
        if folder in (ROOT, ROOT / "src") or any(folder.is_relative_to(w) for w in whole):
            continue
        if python_files(folder) <= paths:
            whole.append(folder)
    left = {p for p in paths if not any(p.is_relative_to(w) for w in whole)}
    return sorted(str(p.relative_to(ROOT)) for p in [*whole, *left])


if __name__ == "__main__":
    for script in sorted((ROOT / "stages").glob("[!_]*.py")):
        print(f"{script.stem}:")
        for path in as_deps(closure(f"stages.{script.stem}")):
            print(f"  {path}")
