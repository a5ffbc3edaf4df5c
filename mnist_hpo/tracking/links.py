"""Addresses in the MLflow UI that open a search's experiment and runs in Model-training mode."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from mnist_hpo.configuration.schema import STORE_DIR, ConfigError, TrackingConfig
from mnist_hpo.tracking.redaction import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Where ``python -m mnist_hpo.ui`` serves by default, and the store folder it serves by default.
LOCAL_UI = "http://127.0.0.1:5000"
# MLflow 3 opens an experiment in GenAI mode (its traces overview) unless the address says otherwise,
# and a fresh browser remembers no mode: every link carries it.
TRAINING_MODE = "workflowType=machine_learning"
# http(s)://host[:port][/path]: no credentials, query or fragment, since the UI's own route follows ``#``.
UI_URL = re.compile(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?(?:/[^\s?#@]*)?")


@dataclass(frozen=True)
class RunLinks:
    """Where a finished run is in MLflow: its page, its experiment's runs table, the model it logged."""

    run: str
    experiment: str
    model_uri: str | None
    ui_command: str | None


def check_ui_url(tracking: TrackingConfig) -> None:
    """Stop before training when ``tracking.ui_url`` is no web address the links can start from."""
    value = tracking.ui_url
    if value is not None and UI_URL.fullmatch(value) is None:
        raise ConfigError(
            f"tracking.ui_url: {redact(value)!r} must be http(s)://host[:port][/path], e.g. {LOCAL_UI}, "
            "or null for the local UI"
        )


def ui_base(tracking: TrackingConfig) -> str:
    """The MLflow UI's address: ``tracking.ui_url``, else a tracking server's own address, else the local UI.

    A tracking server serves its UI at its root. The address is printed, so any password is hidden
    and the query (where tokens go) is dropped.
    """
    if tracking.ui_url:
        return tracking.ui_url.rstrip("/")
    parts = urlsplit(tracking.uri or "")
    if parts.scheme in ("http", "https"):
        return redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))).rstrip("/")
    return LOCAL_UI


def experiments_link(base: str) -> str:
    """The experiments list, for a store that has no experiment of the expected name yet."""
    return f"{base}/#/experiments?{TRAINING_MODE}"


def experiment_link(base: str, experiment_id: str) -> str:
    """An experiment's runs table."""
    return f"{base}/#/experiments/{experiment_id}/runs?{TRAINING_MODE}"


def run_link(base: str, experiment_id: str, run_id: str) -> str:
    """One run's page: its params, metrics, artifacts and children."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{TRAINING_MODE}"


def ui_command(tracking: TrackingConfig) -> str | None:
    """The command that serves the links over the local store, or None when another UI serves them."""
    if tracking.ui_url or tracking.uri:
        return None
    options = "" if tracking.store_dir == STORE_DIR else f" --store-dir {shlex.quote(tracking.store_dir)}"
    return f"python -m mnist_hpo.ui{options}"


def experiment_id_of(client: MlflowClient, name: str) -> str | None:
    """The id of experiment ``name`` in the client's store, or None when there is none (nothing is created)."""
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment is not None else None


def run_links(client: MlflowClient, tracking: TrackingConfig, run_id: str) -> RunLinks:
    """The links a finished run prints, from its record in the store the client is bound to."""
    # runs.py imports MLflow; the session imports this module before any store is opened.
    from mnist_hpo.tracking.runs import MODEL_URI

    run = client.get_run(run_id)
    base = ui_base(tracking)
    return RunLinks(
        run=run_link(base, run.info.experiment_id, run_id),
        experiment=experiment_link(base, run.info.experiment_id),
        model_uri=run.data.tags.get(MODEL_URI),
        ui_command=ui_command(tracking),
    )
