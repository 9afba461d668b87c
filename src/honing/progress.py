"""Progress for long loops that are not model calls (training steps)."""

from __future__ import annotations

from tqdm.auto import tqdm


class StepProgress:
    """A tqdm bar per phase: steps done, rate, ETA and the current loss."""

    def __init__(self, desc: str):
        self.desc = desc
        self.bar: tqdm | None = None
        self.phase: str | None = None

    def __call__(self, phase: str, step: int, total: int, loss: float) -> None:
        if phase != self.phase:
            if self.bar is not None:
                self.bar.close()
            self.bar = tqdm(total=total, desc=f"{self.desc} ({phase})", unit="step", mininterval=2.0)
            self.phase = phase
        self.bar.update(step - self.bar.n)
        if step % 25 == 0 or step == total:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def __enter__(self) -> "StepProgress":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
