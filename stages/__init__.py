"""The pipeline's stage scripts, one per stage of dvc.yaml, run as `python -m stages.<name>`.

Each does four things only: read its params, read and validate its inputs, call
the library, validate and write its outputs and metrics. The DVC glue they share
sits beside them, split so that a stage imports only what it uses:
    _params   params as DVC resolves them, per-iteration overrides, configs, exit
    _outputs  metrics and runtime JSON, curves for `dvc plots`
    _models   roles and critics for the stages that call a model, with budgets
"""
