"""Command line: ``python -m mnist_hpo [key=value ...]`` and ``python -m mnist_hpo -m ...``."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_hpo.composition import check_command_line
from mnist_hpo.config import SWEEP_RUN_ENV, ConfigError, moved_key, register_configs, typed
from mnist_hpo.execution.ray_backend import PlacementError
from mnist_hpo.execution.runtime import configure_backend
from mnist_hpo.redaction import redact
from mnist_hpo.session import JobContext, Session, open_session
from mnist_hpo.tracking.store_loss import TrackingStoreLost, guarded

register_configs()
# Absolute, so Hydra finds conf/ however this module is entered: ``python -m mnist_hpo`` and the
# ``mnist-hpo`` console script alike (a relative path made the script look for a ``conf`` package).
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def job_context() -> JobContext:
    """Describe this Hydra job for the runner."""
    hydra_cfg = HydraConfig.get()
    multirun = hydra_cfg.mode.name == "MULTIRUN"
    return JobContext(
        launch_dir=Path(hydra_cfg.runtime.cwd),
        output_dir=Path(hydra_cfg.runtime.output_dir),
        job_name=f"search-{hydra_cfg.job.num}" if multirun else "search",
        preset=hydra_cfg.runtime.choices.get("experiment") or "none",
        overrides=list(hydra_cfg.overrides.task),
        sweep_run_id=os.environ.get(SWEEP_RUN_ENV) if multirun else None,
    )


class Terminated(KeyboardInterrupt):
    """SIGTERM, as Slurm, Kubernetes, systemd and ``timeout`` stop a job: handled as Ctrl-C is.

    A KeyboardInterrupt, so every block that ends runs KILLED on Ctrl-C does so here too.
    """


def terminate(signum: int, frame: object) -> NoReturn:
    """The SIGTERM handler: stop the search where it is, through the Ctrl-C path."""
    raise Terminated


def fail(error: ConfigError) -> None:
    """Report a user's mistake as one line and exit 2."""
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one search and return its best CV score, so sweepers can optimise it."""
    try:
        config = typed(cfg)
        configure_backend(config.backend, config.device)
        job = job_context()
        # Every check on the user's input runs before Keras is imported (session.py is Keras-free),
        # so a mistake costs a second and prints one line, not TensorFlow's start-up noise.
        session = open_session(config, job)
        from mnist_hpo.dispatch import run

        try:
            with guarded():
                return run(config, job, session=session)
        except TrackingStoreLost as lost:
            stop_store_lost(lost, session, job.output_dir)
        except PlacementError as error:
            print(
                f"cluster: {error}; the search's runs are marked FAILED and its finished fits are kept in the "
                f"fit store; add a node or lower execution.n_jobs, and run `{this_command()}` again to resume",
                file=sys.stderr,
            )
            sys.exit(1)
    except ConfigError as error:
        fail(error)
    except KeyboardInterrupt as stop:
        # The runs were already ended KILLED on the way out; the fit store holds every finished fit.
        terminated = isinstance(stop, Terminated)
        print(
            f"{'terminated (SIGTERM)' if terminated else 'interrupted'}: the search's MLflow runs are marked "
            f"KILLED and its finished fits are kept; run `{this_command()}` again to resume",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGTERM if terminated else 130)


def this_command() -> str:
    """The command line that started this process, credentials hidden: what the user reruns to resume."""
    return " ".join(["python -m mnist_hpo", *(redact(arg) for arg in sys.argv[1:])])


def log_details(text: str, output_dir: Path) -> Path:
    """Append ``text`` to the job's log file (Hydra's, else ``<output_dir>/mnist_hpo.log``), not the terminal."""
    files = [handler for handler in logging.getLogger().handlers if isinstance(handler, logging.FileHandler)]
    path = Path(files[0].baseFilename) if files else output_dir / "mnist_hpo.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(text)
    return path


def stop_store_lost(lost: TrackingStoreLost, session: Session, output_dir: Path) -> NoReturn:
    """Say in one line that the tracking store was lost, what is kept and how to resume; exit 1."""
    store = redact(session.store.uri) if session.store is not None else "(none)"
    log = log_details(f"The tracking store {store} was lost mid-search:\n{lost.details}", output_dir)
    kept = (
        f"the fit store {session.fit_store} keeps every finished fit"
        if session.fit_store is not None
        else "finished fits were not kept (execution.fit_store=false)"
    )
    print(
        f"store lost: the tracking store {store} can no longer be written ({lost.reason}); {kept}; "
        f"restore the store, or point tracking.uri at a new one, and run `{this_command()}` again to resume; "
        f"details in {log}",
        file=sys.stderr,
    )
    sys.exit(1)


def cli() -> None:
    """The entry point: a key that moved groups, or a command line that does not compose, stops with one line."""
    for override in sys.argv[1:]:
        message = moved_key(override)
        if message is not None:
            fail(ConfigError(message))
    try:
        check_command_line(sys.argv[1:], CONFIG_DIR)
    except ConfigError as error:
        fail(error)
    signal.signal(signal.SIGTERM, terminate)
    main()


if __name__ == "__main__":
    cli()
