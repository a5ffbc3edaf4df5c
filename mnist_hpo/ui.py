"""Starts the MLflow UI over the project's store: ``python -m mnist_hpo.ui``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mnist_hpo.configuration.schema import STORE_DIR, TrackingConfig
from mnist_hpo.tracking.layout import ARTIFACTS, DATABASE, SQLITE_PREFIX
from mnist_hpo.tracking.links import experiment_id_of, experiment_link, experiments_link

LOCAL_HOST = "127.0.0.1"


def server_command(store_dir: Path, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for the SQLite store and artifacts under ``store_dir``."""
    store_dir = store_dir.resolve()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"{SQLITE_PREFIX}{store_dir / DATABASE}",
        "--default-artifact-root", (store_dir / ARTIFACTS).as_uri(),
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def address(store_dir: Path, experiment: str, host: str, port: int) -> str:
    """The address that opens ``experiment``'s runs in Model-training mode, or the experiments list if it is new."""
    # Imported here: MLflow takes seconds to import, and --help or a missing store should not wait for it.
    from mnist_hpo.tracking.store import resolve_store

    client = resolve_store(TrackingConfig(store_dir=str(store_dir)), Path.cwd()).client()
    base = f"http://{host}:{port}"
    found = experiment_id_of(client, experiment)
    return experiment_link(base, found) if found is not None else experiments_link(base)


def parser() -> argparse.ArgumentParser:
    """The command-line options: store folder, experiment, port and host (local-only unless told otherwise)."""
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument(
        "--store-dir", type=Path, default=Path(STORE_DIR), help=f"the store folder (default: ./{STORE_DIR})"
    )
    options.add_argument(
        "--experiment",
        default=TrackingConfig.experiment,
        help="the experiment the printed address opens, as tracking.experiment names it (default: %(default)s)",
    )
    options.add_argument("--port", type=int, default=5000)
    options.add_argument(
        "--host",
        default=LOCAL_HOST,
        help="interface to bind; anything but 127.0.0.1 exposes your runs to the network",
    )
    return options


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and replace this process with the MLflow server."""
    options = parser()
    args = options.parse_args(argv)
    if not (args.store_dir / DATABASE).exists():
        options.error(f"--store-dir: no MLflow store at {args.store_dir.resolve()}; run a search first")
    if args.host != LOCAL_HOST:
        print(
            f"warning: serving on {args.host}: anyone who can reach this host can read your runs",
            file=sys.stderr,
        )
    link = address(args.store_dir, args.experiment, args.host, args.port)
    print(f"MLflow UI: {link}  (Ctrl-C to stop)", flush=True)
    command = server_command(args.store_dir, args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
