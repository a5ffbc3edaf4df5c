"""A job's session: where it was launched, and every check that must pass before anything trains.

Keras, TensorFlow and MLflow are imported only when a session is opened, so ``__main__`` can
import this module before it has chosen the Keras backend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mnist_hpo.checks.preflight import preflight
from mnist_hpo.checks.validation import validate_config
from mnist_hpo.configuration.schema import Config, ExecutionConfig, TrackingConfig
from mnist_hpo.data.loading import MnistData, load_data
from mnist_hpo.environment.provenance import package_versions
from mnist_hpo.environment.quiet import import_backend
from mnist_hpo.environment.runtime import describe_device, seed_everything
from mnist_hpo.execution.fit_store import FITS_SUBDIR, FitStore, check_writable
from mnist_hpo.search.bayesian import STUDIES_SUBDIR
from mnist_hpo.tracking.links import check_ui_url

if TYPE_CHECKING:
    from mnist_hpo.tracking.store import Store
    from mnist_hpo.tracking.writer import RunWriter


@dataclass(frozen=True)
class JobContext:
    """Where and how this job was launched, as Hydra reports it."""

    launch_dir: Path
    output_dir: Path
    job_name: str = "search"
    preset: str = "none"
    overrides: list[str] = field(default_factory=list)
    sweep_run_id: str | None = None


@dataclass(frozen=True)
class Session:
    """What every search of one job shares: the tracking store, fit store, data, device and versions.

    ``writer``: the process that writes restored fits' fold runs (tracking/writer.py), where fused
    training will restore them; :meth:`close` ends it.
    """

    store: Store | None
    fit_store: Path | None
    data: MnistData
    device: str
    versions: dict[str, str]
    writer: RunWriter | None = None

    def close(self) -> None:
        """End what the session started: the writer, once it has written every run it was handed."""
        if self.writer is not None:
            self.writer.close()


def restores_fused(cfg: Config) -> bool:
    """Whether the search will restore fused fits in this process, so a writer process pays off.

    Fusion on, tracked, and neither Ray (fits run on the cluster), halving nor torch (each fit alone).
    """
    return (
        cfg.tracking.enabled
        and cfg.execution.fusion
        and cfg.execution.backend != "ray"
        and cfg.search.strategy != "halving"
        and cfg.backend != "torch"
    )


def fit_store_folder(execution: ExecutionConfig, tracking: TrackingConfig, launch_dir: Path) -> Path | None:
    """The fit store's folder: ``execution.fit_store_dir``, else ``<tracking.store_dir>/fits``; None when off."""
    if not execution.fit_store:
        return None
    folder = Path(execution.fit_store_dir) if execution.fit_store_dir else Path(tracking.store_dir) / FITS_SUBDIR
    return (launch_dir / folder).resolve()


def open_session(cfg: Config, job: JobContext) -> Session:
    """Every check that can fail on bad input (config, stores, data, what each fit will meet), then seeding.

    It runs before any MLflow run is created and before any training.
    """
    from mnist_hpo.tracking.limits import check_tracking_limits
    from mnist_hpo.tracking.store import open_store
    from mnist_hpo.tracking.writer import RunWriter

    validate_config(cfg)
    check_ui_url(cfg.tracking)
    # Config and data first: a mistake there leaves no trace in any store.
    data = load_data(cfg.data, cfg.seed)
    preflight(cfg, data.x_train, data.y_train)
    fit_store = fit_store_folder(cfg.execution, cfg.tracking, job.launch_dir)
    if fit_store is not None:
        FitStore(fit_store, key_name="execution.fit_store_dir").check_writable()
    if cfg.search.strategy == "optuna" and not cfg.study.enabled:
        studies = (job.launch_dir / cfg.tracking.store_dir).resolve() / STUDIES_SUBDIR
        check_writable(studies, "tracking.store_dir", "the Optuna study is kept there; choose a writable folder")
    if cfg.tracking.enabled:
        check_tracking_limits(cfg)
    # Started before the store's schema and the backend's import, which its own imports then overlap.
    writer = RunWriter() if restores_fused(cfg) else None
    try:
        store = open_store(cfg.tracking, job.launch_dir) if cfg.tracking.enabled else None
    except BaseException:
        if writer is not None:  # it has written nothing: not waited for
            writer.close(wait=False)
        raise
    if writer is not None and store is not None:
        writer.open(store.uri)
    import_backend()  # the first Keras import: its backend's start-up lines go to the job's log
    device = describe_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    return Session(
        store=store, fit_store=fit_store, data=data, device=device, versions=package_versions(), writer=writer
    )
