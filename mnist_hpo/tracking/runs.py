"""Every ``mnist_hpo.*`` tag name, the provenance tags, and how a run is closed: one place for each."""

from __future__ import annotations

import socket

import psutil
from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus

from mnist_hpo.environment.provenance import Provenance
from mnist_hpo.tracking.redaction import redact

# The run tree: every run says its level and, below a search, which search it belongs to.
LEVEL = "mnist_hpo.level"
SEARCH_RUN = "mnist_hpo.search_run_id"
SWEEP_RUN = "mnist_hpo.sweep_run_id"
CANDIDATE = "mnist_hpo.candidate"
# The split's index in cv_results_ (repeat * cv + fold); the tag keeps its first name, which stores and
# queries already use. The fold within its repeat is the run's ``fold`` param.
SPLIT = "mnist_hpo.fold"
REPEAT = "mnist_hpo.repeat"
ITERATION = "mnist_hpo.iteration"
TRIAL = "mnist_hpo.optuna_trial"  # a candidate run's Optuna trial number
ITERATION_REACHED = "mnist_hpo.iteration_reached"
# Outcomes.
ERROR = "mnist_hpo.error"
FAILED = "mnist_hpo.failed"
LOST = "mnist_hpo.lost"  # a fold run whose fit never finished: its worker died and the fit ran again
BEST = "mnist_hpo.best"
BEST_CANDIDATE = "mnist_hpo.best_candidate_run_id"
BEST_SEARCH = "mnist_hpo.best_search_run_id"
BEST_PARAMS = "mnist_hpo.best_params"
TIED_WITH_BEST = "mnist_hpo.tied_with_best"
REFIT_RULE = "mnist_hpo.refit_rule"
REFITTED = "mnist_hpo.refitted"
MODEL_URI = "mnist_hpo.model_uri"
STAGE2_GRID = "mnist_hpo.stage2_grid"
# Resume: which process owns a search and what it continues.
RESUME_KEY = "mnist_hpo.resume_key"
RESUMED_FROM = "mnist_hpo.resumed_from_status"
RESUME_COUNT = "mnist_hpo.resume_count"
# The fit store: a trained fit's key; a restored fit's key and the run that trained it; per search, the counts.
FIT_KEY = "mnist_hpo.fit_key"
REUSED = "mnist_hpo.reused"
REUSED_FIT_KEY = "mnist_hpo.reused_fit_key"
TRAINED_BY = "mnist_hpo.trained_by_run_id"
FUSED_GROUP = "mnist_hpo.fused_group"  # the fused group that trained a fit, and how many members it had
REUSED_FITS = "mnist_hpo.reused_fits"
TRAINED_FITS = "mnist_hpo.trained_fits"
FAILED_FITS = "mnist_hpo.failed_fits"
NOT_STORED = "mnist_hpo.not_stored"  # a trained fit the fit store could not keep, and why
UNSTORED_FITS = "mnist_hpo.unstored_fits"
PID = "mnist_hpo.pid"
HOST = "mnist_hpo.host"
PROCESS_STARTED = "mnist_hpo.process_started"
# Provenance.
PRESET = "mnist_hpo.preset"
OVERRIDES = "mnist_hpo.overrides"
OUTPUT_DIR = "mnist_hpo.output_dir"
GIT_COMMIT = "mlflow.source.git.commit"

MAX_TEXT = 5000
# Levels whose run is owned by the process that opened it (tagged with this_process()).
OWNED_LEVELS = ("search", "study", "stage")
LOST_FIT = "its worker died before the fit finished (a lost Ray node or a killed process); the fit ran again"


def provenance_tags(provenance: Provenance) -> dict[str, str]:
    """The tags that say what a search run was: preset, overrides, code, data, versions, device."""
    tags = {
        PRESET: provenance.preset,
        OVERRIDES: redact(" ".join(provenance.overrides)) or "(none)",
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


def this_process() -> dict[str, str]:
    """Tags that let a later process tell whether this one, which owns a run, is still alive."""
    process = psutil.Process()
    return {HOST: socket.gethostname(), PID: str(process.pid), PROCESS_STARTED: f"{process.create_time():.2f}"}


def process_alive(tags: dict[str, str]) -> bool:
    """Whether the process a run's tags name still runs (one on another host: assumed)."""
    if PID not in tags:
        return False
    if tags.get(HOST) != socket.gethostname():
        return True
    try:
        process = psutil.Process(int(tags[PID]))
        started = float(tags.get(PROCESS_STARTED, "0"))
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - started) < 1
    except (psutil.Error, ValueError):
        return False


def close_dead_runs(client: MlflowClient, experiment_id: str) -> None:
    """End KILLED every search, study and stage run left RUNNING by a process that died (kill -9).

    A search's candidate, fold and refit runs end with it; a study's stages and searches are
    owned runs of their own and end by the same rule.
    """
    reason = "its process died (found RUNNING by a later run)"
    for run in client.search_runs([experiment_id], "attributes.status = 'RUNNING'", max_results=50000):
        tags = run.data.tags
        if tags.get(LEVEL) not in OWNED_LEVELS or PID not in tags or process_alive(tags):
            continue
        if tags[LEVEL] == "search":
            query = f"tags.`{SEARCH_RUN}` = '{run.info.run_id}' and attributes.status = 'RUNNING'"
            for child in client.search_runs([experiment_id], query, max_results=50000):
                if child.info.run_id != run.info.run_id:
                    close_run(client, child.info.run_id, RunStatus.KILLED, reason)
        close_run(client, run.info.run_id, RunStatus.KILLED, reason)


def close_lost_fits(client: MlflowClient, experiment_id: str, search_run_id: str) -> list[str]:
    """End FAILED, tagged lost, every fold run of a search still RUNNING after all its fits returned.

    Every fit closes its own fold run as it ends, so one still RUNNING then was an attempt whose
    worker died mid-fit (on Ray: its node was lost), and that the backend ran again; its reason names
    the run that holds the fit's outcome. Call it only once the search's fits are done.

    Returns:
        The ids of the runs it ended.
    """
    query = f"tags.`{SEARCH_RUN}` = '{search_run_id}' and tags.`{LEVEL}` = 'fold'"
    # The usual answer is none: ask for the running ones first, the others only to name a lost fit's outcome.
    lost = client.search_runs([experiment_id], f"{query} and attributes.status = 'RUNNING'", max_results=50000)
    if not lost:
        return []
    folds = client.search_runs([experiment_id], query, max_results=50000)

    def fit(run: Run) -> tuple[str | None, ...]:
        return tuple(run.data.tags.get(name) for name in (CANDIDATE, SPLIT, ITERATION))

    outcomes = {fit(run): run.info.run_id for run in folds if run.info.status != "RUNNING"}
    for run in lost:
        again = outcomes.get(fit(run))
        client.set_tag(run.info.run_id, LOST, "true")
        close_run(client, run.info.run_id, RunStatus.FAILED, f"{LOST_FIT} as run {again}" if again else LOST_FIT)
    return [run.info.run_id for run in lost]
