"""A local tracking store's layout under ``tracking.store_dir``: one place, free of MLflow imports."""

from __future__ import annotations

SQLITE_PREFIX = "sqlite:///"
DATABASE = "mlflow.db"  # the runs
ARTIFACTS = "artifacts"  # the runs' files and logged models
