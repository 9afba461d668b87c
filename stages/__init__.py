"""The pipeline's stage scripts, one per stage of dvc.yaml, run as `python -m stages.<name>`.

Each does four things only: read its params, read and validate its inputs, call
the library, validate and write its outputs and metrics. The DVC glue they share
sits beside them, split so that a stage imports only what it uses:
    _params   params as DVC resolves them, per-iteration overrides, configs, exit
    _outputs  metrics and runtime JSON, curves for `dvc plots`
    _models   roles and critics for the stages that call a model, with budgets
"""

import os

# polars' allocator (jemalloc) keeps the pages a frame freed for 10 s by default, so a
# streaming stage, which frees a frame every fraction of a second, grew its peak RSS
# with the pool: filter at 10.8 M rows peaked at 807 MB, against 658 MB at 1.08 M. Pages
# go back after 1 s instead (742 MB at 10.8 M, no slower). Read when polars loads, so
# it is set here, before any stage imports polars; a value in the environment wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")
