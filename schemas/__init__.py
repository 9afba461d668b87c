"""Pandera (polars) schemas, one module per artifact, each class named after it.

Every artifact row has a stable string `id` (unique) and provenance
(`source`, or `iteration` with the producing model). Validate with
`honing.artifacts.validation.validate`, read and write with `honing.artifacts.io`.

This file imports nothing, so a stage that reads one artifact depends on that
artifact's schema module alone; `schemas.registry` names them all.
"""
