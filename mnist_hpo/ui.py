"""Starts the MLflow UI over the project's store: ``python -m mnist_hpo.ui``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

LOCAL_HOST = "127.0.0.1"


def server_command(store_dir: Path, host: str, port: int) -> list[str]:
    """The ``mlflow server`` command line for the SQLite store and artifacts under ``store_dir``."""
    store_dir = store_dir.resolve()
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{store_dir / 'mlflow.db'}",
        "--default-artifact-root", (store_dir / "artifacts").as_uri(),
        "--host", host,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The command-line options: store folder, port and host (local-only unless told otherwise)."""
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--store-dir", type=Path, default=Path("mlruns"), help="the store folder (default: ./mlruns)")
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
    if not (args.store_dir / "mlflow.db").exists():
        options.error(f"--store-dir: no MLflow store at {args.store_dir.resolve()}; run a search first")
    if args.host != LOCAL_HOST:
        print(
            f"warning: serving on {args.host}: anyone who can reach this host can read your runs",
            file=sys.stderr,
        )
    print(f"MLflow UI: http://{args.host}:{args.port}  (Ctrl-C to stop)", flush=True)
    command = server_command(args.store_dir, args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
