"""honing: a dataset factory for self-improving language models (SELF, SRT, EVOLVE)."""

__version__ = "0.1.0"
