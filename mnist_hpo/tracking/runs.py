"""Every ``mnist_hpo.*`` tag name, the provenance tags, and how a run is closed: one place for each."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities import RunStatus

from mnist_hpo.provenance import Provenance

# The run tree: every run says its level and, below a search, which search it belongs to.
LEVEL = "mnist_hpo.level"
SEARCH_RUN = "mnist_hpo.search_run_id"
SWEEP_RUN = "mnist_hpo.sweep_run_id"
CANDIDATE = "mnist_hpo.candidate"
FOLD = "mnist_hpo.fold"
ITERATION = "mnist_hpo.iteration"
ITERATION_REACHED = "mnist_hpo.iteration_reached"
# Outcomes.
ERROR = "mnist_hpo.error"
FAILED = "mnist_hpo.failed"
BEST = "mnist_hpo.best"
BEST_CANDIDATE = "mnist_hpo.best_candidate_run_id"
BEST_SEARCH = "mnist_hpo.best_search_run_id"
BEST_PARAMS = "mnist_hpo.best_params"
MODEL_URI = "mnist_hpo.model_uri"
STAGE2_GRID = "mnist_hpo.stage2_grid"
# Resume: which process owns a search, what it continues, which fits it took from the journal.
RESUME_KEY = "mnist_hpo.resume_key"
RESUMED_FROM = "mnist_hpo.resumed_from_status"
RESUME_COUNT = "mnist_hpo.resume_count"
REUSED = "mnist_hpo.reused"
REUSED_FITS = "mnist_hpo.reused_fits"
PID = "mnist_hpo.pid"
HOST = "mnist_hpo.host"
PROCESS_STARTED = "mnist_hpo.process_started"
# Provenance.
PRESET = "mnist_hpo.preset"
OVERRIDES = "mnist_hpo.overrides"
OUTPUT_DIR = "mnist_hpo.output_dir"
GIT_COMMIT = "mlflow.source.git.commit"

MAX_TEXT = 5000


def provenance_tags(provenance: Provenance) -> dict[str, str]:
    """The tags that say what a search run was: preset, overrides, code, data, versions, device."""
    tags = {
        PRESET: provenance.preset,
        OVERRIDES: " ".join(provenance.overrides) or "(none)",
        OUTPUT_DIR: str(provenance.output_dir),
        "data.fingerprint": provenance.data_fingerprint,
        "data.source": provenance.data_source,
        "data.train_size": str(provenance.train_size),
        "data.test_size": str(provenance.test_size),
        "keras.backend": provenance.keras_backend,
        "device": provenance.device,
        "python": provenance.python,
        **{f"version.{name}": value for name, value in provenance.versions.items()},
    }
    if provenance.git_commit:
        tags[GIT_COMMIT] = provenance.git_commit
    return tags


def exit_status(kind: type[BaseException]) -> RunStatus:
    """KILLED for an interrupt (Ctrl-C), FAILED for anything else that ended a block."""
    return RunStatus.KILLED if issubclass(kind, KeyboardInterrupt) else RunStatus.FAILED


def close_run(client: MlflowClient, run_id: str, status: int, reason: str | None = None) -> None:
    """End a run with ``status``; a reason (why it did not finish) goes in the error tag."""
    if reason:
        client.set_tag(run_id, ERROR, reason[:MAX_TEXT])
    client.set_terminated(run_id, RunStatus.to_string(status))


def close_on_exit(client: MlflowClient, run_id: str, kind: type[BaseException] | None, error: object) -> None:
    """How a ``with`` block ends its run: FINISHED when clean, else KILLED/FAILED with the reason."""
    if kind is None:
        close_run(client, run_id, RunStatus.FINISHED)
    else:
        close_run(client, run_id, exit_status(kind), f"{kind.__name__}: {error}")
