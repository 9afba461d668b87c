"""Prompt templates: Jinja files in one folder per preset (`prompts/micro/`, `prompts/srt/`).

A template is a file so that it can be a stage's DVC dependency, and its hash is
part of every request's cache key: editing a prompt reruns exactly what uses it.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import jinja2


class PromptSet:
    """The templates of one preset: answer, feedback and (optionally) refine and judge."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        if not (self.folder / "answer.jinja2").exists():
            raise FileNotFoundError(f"{self.folder}/answer.jinja2: no such prompt template")
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(self.folder),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
        )

    def _render(self, name: str, **values: str) -> str:
        return self._env.get_template(f"{name}.jinja2").render(**values)

    def answer(self, prompt: str) -> str:
        return self._render("answer", prompt=prompt)

    def feedback(self, prompt: str, response: str) -> str:
        return self._render("feedback", prompt=prompt, response=response)

    def refine(self, prompt: str, response: str, feedback: str) -> str:
        return self._render("refine", prompt=prompt, response=response, feedback=feedback)

    def judge(self, prompt: str, first: str, second: str) -> str:
        """A pairwise judge's prompt: `first` is shown as answer A, `second` as B."""
        return self._render("judge", prompt=prompt, first=first, second=second)

    def has(self, name: str) -> bool:
        return (self.folder / f"{name}.jinja2").exists()

    def version(self, name: str) -> str:
        return self.versions.get(name, "")

    @cached_property
    def versions(self) -> dict[str, str]:
        return {
            p.stem: hashlib.sha256(p.read_bytes()).hexdigest()[:16]
            for p in sorted(self.folder.glob("*.jinja2"))
        }


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}
