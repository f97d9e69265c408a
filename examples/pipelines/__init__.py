"""Pipelines defined in TOML (``engine.pipeline``): ``reindex.toml`` and its tasks."""
