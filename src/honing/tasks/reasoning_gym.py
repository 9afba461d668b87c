"""reasoning_gym: seeded procedural tasks with their own verifiers (the reasoning-gym
package, `pip install 'honing[gym]'`).

A prompt row is one gym item: its question, its answer, task
"reasoning_gym:<task>", and the whole entry (question, answer, metadata) as JSON in
`metadata`, which is what the task's verifier reads. Several tasks mix by weight
through the gym's composite dataset.

The rule check extracts the final answer from the reply (the last line
"Answer: <answer>", else an <answer>...</answer> tag, else the last line, read
after its last "=" or "is" where it has one: "4 + 3 = 7", "The answer is 7.") and
asks the task's own `score_answer`; full credit is correct. Small instruct models
(SmolLM2-135M) answer "4 + 3 = 7" and seldom write the Answer line: without the
last-line reading every base answer would count as wrong, right or not.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from honing.tasks.base import Row, TaskError, TaskFamily

FAMILY = "reasoning_gym"
_ANSWER_LINE = re.compile(r"^[\s*#>]*answer[\s*]*:[\s*]*(.*?)[\s*]*$", re.IGNORECASE | re.MULTILINE)
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_LAST_LINE_VALUE = re.compile(r"(?:=|\bis\b)(?!.*(?:=|\bis\b))\s*(.+?)[\s.*]*$", re.IGNORECASE)


def _gym():
    try:
        import reasoning_gym
    except ImportError as e:
        raise TaskError("reasoning_gym tasks need the reasoning-gym package: pip install 'honing[gym]'") from e
    return reasoning_gym


def _datasets() -> Mapping[str, tuple[type, type]]:
    _gym()
    from reasoning_gym.factory import DATASETS

    return DATASETS


def check_task(name: str, where: str = "reasoning_gym") -> None:
    """A TaskError naming the nearest task names when `name` is not a gym task."""
    names = sorted(n for n in _datasets() if n != "composite")
    if name in names:
        return
    near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f"near names: {', '.join(near)}" if near else f"none is near it; there are {len(names)} tasks"
    raise TaskError(f"{where}: unknown reasoning_gym task {name!r} ({hint})")


def _options(name: str, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A task's options without `weight`, checked against its config's fields."""
    options = {k: v for k, v in options.items() if k != "weight"}
    known = {f.name for f in dataclasses.fields(_datasets()[name][1])} - {"seed", "size"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TaskError(f"{where}: unknown option(s) {', '.join(unknown)} for task {name!r}; "
                        f"expected some of {', '.join(sorted(known))}")
    return options


def items(tasks: Mapping[str, Mapping[str, Any] | None], size: int, seed: int,
          where: str = "reasoning_gym") -> list[dict[str, Any]]:
    """`size` gym items, {prompt, answer, task, metadata}: from one task, or from
    several mixed by their `weight` (default 1). `tasks` maps each task name to its
    options (the task's config fields, e.g. min_terms for chain_sum)."""
    if not tasks:
        raise TaskError(f"{where}: no task named (expected e.g. tasks: {{chain_sum: {{weight: 1}}}})")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise TaskError(f"{where}.size must be an integer >= 1, got {size!r}")
    specs = {}
    for name, options in tasks.items():
        check_task(name, where)
        options = dict(options or {})
        weight = options.get("weight", 1)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise TaskError(f"{where}.tasks.{name}.weight must be a number > 0, got {weight!r}")
        specs[name] = (weight, _options(name, options, f"{where}.tasks.{name}"))
    gym = _gym()
    try:
        if len(specs) == 1:
            ((name, (_, options)),) = specs.items()
            dataset = gym.create_dataset(name, size=size, seed=seed, **options)
        else:
            from reasoning_gym.composite import DatasetSpec

            mix = [DatasetSpec(name, weight, options) for name, (weight, options) in specs.items()]
            dataset = gym.create_dataset("composite", size=size, seed=seed, datasets=mix)
    except (AssertionError, TypeError, ValueError) as e:  # the gym checks its configs with asserts
        raise TaskError(f"{where}: reasoning_gym rejected the options of {', '.join(specs)}: {e}") from e
    return [_row(dataset[i]) for i in range(size)]


def _row(item: Mapping[str, Any]) -> dict[str, Any]:
    answer = item.get("answer")
    return {
        "prompt": item["question"],
        "answer": None if answer is None else str(answer),
        "task": f"{FAMILY}:{item['metadata']['source_dataset']}",
        "metadata": json.dumps(dict(item), sort_keys=True, ensure_ascii=False, default=_plain),
    }


def _plain(value: Any) -> Any:
    """JSON for what a gym entry may hold beyond JSON's types (sets, numpy scalars)."""
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)


def final_answer(response: str) -> str | None:
    """The last "Answer: x" line, else the last <answer> tag, else the last line (what
    follows its last "=" or "is", where it has one)."""
    if lines := _ANSWER_LINE.findall(response):
        return lines[-1].strip() or None
    if tags := _ANSWER_TAG.findall(response):
        return tags[-1].strip() or None
    rest = [line.strip() for line in response.strip().splitlines() if line.strip()]
    if not rest:
        return None
    value = _LAST_LINE_VALUE.search(rest[-1])
    return value.group(1) if value else rest[-1]


@functools.cache
def _scorer(task: str):
    return _gym().get_score_answer_fn(task)


def score(response: str, entry: Mapping[str, Any]) -> float:
    """The task's own score of the response's final answer, 0..1."""
    return float(_scorer(entry["metadata"]["source_dataset"])(final_answer(response), entry=entry))


def verify(response: str, row: Row) -> bool | None:
    if not row.get("metadata"):
        return None
    return score(response, json.loads(row["metadata"])) >= 1.0


def family() -> TaskFamily:
    return TaskFamily(FAMILY, verify=verify, final_answer=final_answer)
