"""Command line: ``python -m mnist_hpo [key=value ...]`` and ``python -m mnist_hpo -m ...``."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_hpo.checks.composition import check_command_line
from mnist_hpo.configuration.schema import SWEEP_RUN_ENV, ConfigError, moved_key, register_configs, typed
from mnist_hpo.environment.quiet import job_log, route_chatter
from mnist_hpo.environment.runtime import configure_backend
from mnist_hpo.execution.ray_backend import PlacementError
from mnist_hpo.session import JobContext, Session, open_session
from mnist_hpo.tracking.redaction import redact
from mnist_hpo.tracking.store_loss import TrackingStoreLost, guarded

register_configs()
# The package's own configs (conf/ in the repository, mnist_hpo.conf once installed): found the same
# way from a wheel, a regular or an editable install, and by ``python -m`` or the console script.
CONFIG_MODULE = "mnist_hpo.conf"
CONFIG_DIR_FLAGS = ("--config-dir", "-cd")


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


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one search and return its best CV score, so sweepers can optimise it."""
    try:
        config = typed(cfg)
        job = job_context()
        route_chatter(job_log(job.output_dir), verbose=bool(HydraConfig.get().verbose))
        configure_backend(config.backend, config.device)
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
            unfinished = " ".join(getattr(error, "__notes__", []))  # the fits it stopped (tracking/search_run.py)
            print(
                f"cluster: {error}; the search's runs are marked FAILED{f' ({unfinished})' if unfinished else ''} "
                f"and its finished fits are kept in the fit store; add a node or lower execution.n_jobs, and run "
                f"`{this_command()}` again to resume",
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
    path = job_log(output_dir)
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


def check_config_dir(argv: list[str]) -> None:
    """A user's config folder (Hydra's ``--config-dir``) must be a folder: stop in one line naming it."""
    for position, arg in enumerate(argv):
        if arg.startswith("--config-dir="):
            folder: str | None = arg.split("=", 1)[1]
        elif arg in CONFIG_DIR_FLAGS:
            folder = argv[position + 1] if position + 1 < len(argv) else None
        else:
            continue
        if not folder or not Path(folder).expanduser().is_dir():
            fail(
                ConfigError(
                    f"--config-dir: {folder or '(nothing)'} is not a folder; give the folder holding your own "
                    "config groups (e.g. my-configs with grid/mine.yaml, experiment/mine.yaml)"
                )
            )


def cli() -> None:
    """The entry point: a key that moved groups, or a command line that does not compose, stops with one line."""
    for override in sys.argv[1:]:
        message = moved_key(override)
        if message is not None:
            fail(ConfigError(message))
    check_config_dir(sys.argv[1:])
    try:
        check_command_line(sys.argv[1:], CONFIG_MODULE)
    except ConfigError as error:
        fail(error)
    signal.signal(signal.SIGTERM, terminate)
    main()


if __name__ == "__main__":
    cli()
