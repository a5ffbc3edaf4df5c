"""Command line: ``python -m mnist_hpo [key=value ...]`` and ``python -m mnist_hpo -m ...``."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mnist_hpo.config import SWEEP_RUN_ENV, ConfigError, register_configs
from mnist_hpo.runtime import configure_backend

register_configs()


def job_context():
    """Describe this Hydra job for the runner."""
    from mnist_hpo.runner import JobContext

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


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one search and return its best CV score, so sweepers can optimise it."""
    try:
        configure_backend(cfg.backend, cfg.device)
        # Imported only now: importing the runner imports Keras, which reads the backend.
        from mnist_hpo.runner import run

        return run(cfg, job_context())
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
