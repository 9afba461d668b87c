"""The task families by name: what a prompt row's `task` may say before its colon.

An explicit mapping, no registration at import time: a new family is one module
(a `family()` constructor) and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from honing.tasks import micro, reasoning_gym, reference
from honing.tasks.base import TaskError, TaskFamily, Tasks, family_name

FAMILIES: dict[str, Callable[[], TaskFamily]] = {
    "micro": micro.family,
    "reference": reference.family,
    "reasoning_gym": reasoning_gym.family,
}


def load_tasks(tasks: Iterable[str]) -> Tasks:
    """The families that the task names (a prompts artifact's `task` column) use."""
    names = sorted({family_name(t) for t in tasks})
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise TaskError(f"unknown task famil{'ies' if len(unknown) > 1 else 'y'} {', '.join(map(repr, unknown))}; "
                        f"expected one of {', '.join(FAMILIES)}")
    return Tasks({name: FAMILIES[name]() for name in names})
