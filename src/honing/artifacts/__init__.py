"""Artifacts: reading and writing Parquet files checked against their schemas,
messages that name file, row id and column, and the prompt pools' preparation."""
