"""Runs what the config asks for, one search or a coarse-to-fine study, in one opened session."""

from __future__ import annotations

from rich.console import Console

from mnist_hpo.configuration.schema import Config
from mnist_hpo.report.tables import output_console
from mnist_hpo.runner import run_search
from mnist_hpo.session import JobContext, Session, open_session
from mnist_hpo.study import run_study


def run(cfg: Config, job: JobContext, console: Console | None = None, session: Session | None = None) -> float:
    """Run the search (or the staged study) ``cfg`` describes; return its best mean CV score.

    ``session`` is the job's opened session, when the caller opened it first (``__main__`` does,
    so a bad input stops before Keras is imported); else it is opened here.
    """
    console = console or output_console()
    session = session or open_session(cfg, job)
    try:
        if cfg.study.enabled:
            return run_study(cfg, job, session, console)
        return run_search(cfg, job, session, console).result.best_score
    finally:
        session.close()
