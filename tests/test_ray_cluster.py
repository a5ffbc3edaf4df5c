"""execution.backend=ray on a real two-node Ray cluster, tracked over HTTP, with a node killed mid-search.

Two raylets on this machine (``ray start --head``, then ``ray start --address``), ``mlflow server`` as
the tracking URI, and the smoke search with its fits spread over both nodes. Once the second node has
finished a fit and started another, it dies as a machine does: its raylet and every process under it
get SIGKILL. Ray restarts the lost actor on the head and runs the lost fit again there.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pandas as pd
import psutil
import pytest
from conftest import SMOKE_CANDIDATES, SMOKE_FOLDS
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow_tree import runs_by_level

pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow

RAY = Path(sys.executable).with_name("ray")
# A fresh cluster without tokens: `ray start` would switch token authentication on if this user
# has a token in ~/.ray, and the search would then need it too.
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "COLUMNS": "160"}
NAMED_PORTS = 10  # each node's own ports; its workers' ports follow them
WORKER_PORTS = 30
FITS = SMOKE_CANDIDATES * SMOKE_FOLDS
START_ATTEMPTS = 3


def free_ports(count: int) -> list[int]:
    """``count`` consecutive free TCP ports, below the range the kernel hands to outgoing connections."""
    for _ in range(100):
        start = random.randrange(20000, 32000 - count)
        try:
            for port in range(start, start + count):
                with socket.socket() as probe:
                    probe.bind(("", port))  # every interface: Ray binds some ports on all of them
        except OSError:
            continue
        return list(range(start, start + count))
    raise RuntimeError(f"no {count} consecutive free ports")


def kill_all(processes: list[psutil.Process]) -> None:
    """SIGKILL the processes, as a machine that dies ends them, and reap them."""
    for process in processes:
        with suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(processes, timeout=30)


class RayNode:
    """One raylet with its agents and workers, started by ``ray start`` on this machine."""

    def __init__(self, temp_dir: Path, cpus: int, head_address: str | None = None) -> None:
        ports = free_ports(NAMED_PORTS + WORKER_PORTS)
        self.node_manager_port = ports[0]
        self.command = [
            str(RAY), "start", "--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1",
            "--temp-dir", str(temp_dir), "--disable-usage-stats",
            "--node-manager-port", str(ports[0]), "--object-manager-port", str(ports[1]),
            "--dashboard-agent-listen-port", str(ports[2]), "--dashboard-agent-grpc-port", str(ports[3]),
            "--runtime-env-agent-port", str(ports[4]), "--metrics-export-port", str(ports[5]),
            "--min-worker-port", str(ports[NAMED_PORTS]), "--max-worker-port", str(ports[-1]),
        ]  # fmt: skip
        if head_address is None:
            self.address = f"127.0.0.1:{ports[6]}"
            self.command += ["--head", "--port", str(ports[6]), "--include-dashboard", "false"]
            self.command += ["--dashboard-port", str(ports[7]), "--ray-client-server-port", str(ports[8])]
        else:
            self.address = head_address
            self.command += ["--address", head_address]
        self.group: int | None = None
        self.raylet: psutil.Process | None = None

    def start(self) -> None:
        """Run ``ray start`` in a session of its own: every daemon it leaves behind keeps that process group.

        Ray gives a new raylet a fixed 30 s to register with the GCS (``ray/_private/node.py``, not
        configurable); on a machine loaded by other tests it can take longer, and ``ray start`` then
        fails with "timed out during startup". That attempt's processes are killed and it starts again,
        up to ``START_ATTEMPTS`` times; any other failure fails the fixture at once.
        """
        for attempt in range(1, START_ATTEMPTS + 1):
            output_to = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
            started = subprocess.Popen(self.command, env=ENV, start_new_session=True, **output_to)
            self.group = started.pid
            output = started.communicate(timeout=300)[0]
            if started.returncode == 0:
                break
            timed_out = "timed out during startup" in output
            assert timed_out and attempt < START_ATTEMPTS, output[-3000:]
            kill_all(self.processes())
        flag = f"--node_manager_port={self.node_manager_port}"
        self.raylet = next(
            process for process in psutil.process_iter(["cmdline"]) if flag in (process.info["cmdline"] or [])
        )

    def processes(self) -> list[psutil.Process]:
        """Its ``ray start`` group, the raylet and everything under it (workers start groups of their own)."""
        found = {process.pid: process for process in psutil.process_iter() if self.in_group(process)}
        with suppress(psutil.Error):
            if self.raylet is not None:
                found |= {process.pid: process for process in [self.raylet, *self.raylet.children(recursive=True)]}
        return list(found.values())

    def in_group(self, process: psutil.Process) -> bool:
        try:
            return self.group is not None and os.getpgid(process.pid) == self.group
        except OSError:
            return False

    def worker_pids(self) -> set[int]:
        """The processes under this node's raylet now: its agents and workers."""
        try:
            return {process.pid for process in self.raylet.children(recursive=True)} if self.raylet else set()
        except psutil.Error:
            return set()

    def kill(self) -> None:
        """Die as a machine dies: SIGKILL to the raylet and every process of this node, nothing graceful."""
        kill_all(self.processes())


@pytest.fixture
def ray_cluster() -> Iterator[tuple[RayNode, RayNode]]:
    """A head with room for two fits and a second node with room for one (the fits ask a CPU each)."""
    # A short path: a raylet's socket path must fit in 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    nodes: list[RayNode] = []
    try:
        for cpus in (2, 1):
            nodes.append(RayNode(temp_dir, cpus, head_address=nodes[0].address if nodes else None))
            nodes[-1].start()
        yield nodes[0], nodes[1]
    finally:
        for node in reversed(nodes):
            node.kill()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    """``mlflow server`` over a fresh SQLite store, artifacts served over HTTP too; its URI."""
    port = free_ports(1)[0]
    folder = tmp_path / "server"
    folder.mkdir()
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination", str(folder / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    server = subprocess.Popen(
        command,
        env=ENV,
        start_new_session=True,
        stdout=(folder / "server.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def wait_until_serving(uri: str, timeout_s: float = 300) -> None:
    """Block until the tracking server answers its health check."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def serving_launch(tmp_path: Path, uri: str) -> tuple[MlflowClient, Path]:
    """A client of the tracking server once it answers, and an empty folder to launch the search from."""
    wait_until_serving(uri)
    launch = tmp_path / "launch"
    launch.mkdir()
    return MlflowClient(uri), launch


def fold_runs(client: MlflowClient) -> list[Run]:
    """Every fold run so far (none before the search has made its experiment)."""
    experiment = client.get_experiment_by_name("mnist-hpo")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`mnist_hpo.level` = 'fold'", max_results=1000)


def search_args(head: RayNode, uri: str) -> list[str]:
    """The smoke search on the cluster, one CPU per fit, logging over HTTP."""
    return [
        "experiment=smoke",
        "hydra.run.dir=outputs/smoke",
        "execution.backend=ray",
        "execution.n_jobs=2",
        "execution.progress=false",
        f"execution.ray.address={head.address}",
        "+execution.ray.ray_remote_args={num_cpus: 1}",
        f"tracking.uri={uri}",
    ]


def test_a_search_survives_losing_a_ray_node_and_counts_every_fit_once(
    tmp_path: Path, tracking_server: str, ray_cluster: tuple[RayNode, RayNode]
) -> None:
    # Given: a two-node cluster and a tracking server (started while the cluster came up).
    head, second = ray_cluster
    client, launch = serving_launch(tmp_path, tracking_server)
    command = [sys.executable, "-m", "mnist_hpo", *search_args(head, tracking_server)]

    # When: the search runs, and the second node dies once it has finished a fit and started its next.
    with (tmp_path / "search.out").open("w") as out, (tmp_path / "search.err").open("w") as err:
        search = subprocess.Popen(command, cwd=launch, env=ENV, stdout=out, stderr=err)
    on_head: set[int] = set()
    on_second: set[int] = set()
    lost_at_kill: set[str] = set()
    deadline = time.monotonic() + 900
    try:
        while search.poll() is None:
            assert time.monotonic() < deadline, "the search did not finish in 15 minutes"
            on_head |= head.worker_pids()
            if not lost_at_kill:
                on_second |= second.worker_pids()
                runs = fold_runs(client)
                finished_there = [
                    run
                    for run in runs
                    if run.info.status == "FINISHED" and int(run.data.tags.get("mnist_hpo.pid", 0)) in on_second
                ]
                running = {run.info.run_id for run in runs if run.info.status == "RUNNING"}
                if finished_there and len(runs) == FITS and running:
                    second.kill()
                    lost_at_kill = running
            time.sleep(0.5)
    finally:
        if search.poll() is None:
            search.kill()
    stderr = (tmp_path / "search.err").read_text()
    assert search.returncode == 0, stderr[-3000:]
    assert lost_at_kill, "the second node was never killed mid-search"

    # Then: every fit ran once to its end, on one node or the other; the lost one again on the head.
    levels = runs_by_level(tracking_server)
    assert {run.info.status for runs in levels.values() for run in runs} <= {"FINISHED", "FAILED"}
    (search_run,) = levels["search"]
    finished = [run for run in levels["fold"] if run.info.status == "FINISHED"]
    lost = [run for run in levels["fold"] if run.info.status != "FINISHED"]

    def fit(run: Run) -> tuple[str, str]:
        return run.data.tags["mnist_hpo.candidate"], run.data.tags["mnist_hpo.fold"]

    assert len(finished) == len(set(map(fit, finished))) == FITS  # one FINISHED run per candidate and fold
    by_fit = {fit(run): run for run in finished}
    pids = {run.info.run_id: int(run.data.tags["mnist_hpo.pid"]) for run in finished}
    assert set(pids.values()) & on_second, "no fit finished on the second node"
    assert set(pids.values()) & on_head, "no fit finished on the head"
    assert lost and {run.info.run_id for run in lost} <= lost_at_kill
    for run in lost:
        retry = by_fit[fit(run)]
        assert run.info.status == "FAILED" and run.data.tags["mnist_hpo.lost"] == "true"
        assert run.data.tags["mnist_hpo.error"].endswith(f"the fit ran again as run {retry.info.run_id}")
        assert pids[retry.info.run_id] in on_head
        assert "test_score" not in run.data.metrics

    # One score per candidate and fold in cv_results_, the same as its FINISHED fold run's.
    results = pd.read_csv(launch / "outputs/smoke/cv_results.csv")
    assert len(results) == SMOKE_CANDIDATES
    for _, row in results.iterrows():
        for split in range(SMOKE_FOLDS):
            key = (json.dumps({"activation": row["param_activation"]}), str(split))
            assert math.isfinite(row[f"split{split}_test_score"])
            assert by_fit[key].data.metrics["test_score"] == pytest.approx(row[f"split{split}_test_score"])
    # The fold fits and the refit trained once each; the lost attempt is not a fit.
    assert search_run.data.tags["mnist_hpo.trained_fits"] == str(FITS + 1)
    assert search_run.data.tags["mnist_hpo.reused_fits"] == "0"

    # When: the same command runs again, on what is left of the cluster.
    again = subprocess.run(command, cwd=launch, env=ENV, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]

    # Then: it trains nothing; every fit, the one the dead node finished included, comes from the fit store.
    levels = runs_by_level(tracking_server)
    (restart,) = [run for run in levels["search"] if run.info.run_id != search_run.info.run_id]
    assert restart.data.tags["mnist_hpo.trained_fits"] == "0"
    assert restart.data.tags["mnist_hpo.reused_fits"] == str(FITS + 1)
    restored = [run for run in levels["fold"] if run.data.tags["mnist_hpo.search_run_id"] == restart.info.run_id]
    assert len(restored) == FITS
    assert {run.data.tags["mnist_hpo.trained_by_run_id"] for run in restored} == set(pids)


def test_a_search_whose_lost_fit_finds_no_room_stops_in_one_line_instead_of_hanging(
    tmp_path: Path, tracking_server: str, ray_cluster: tuple[RayNode, RayNode]
) -> None:
    # Given: a search with three workers filling both nodes (two CPUs on the head, one on the second)
    head, second = ray_cluster
    client, launch = serving_launch(tmp_path, tracking_server)
    args = [
        *search_args(head, tracking_server),
        "execution.n_jobs=3",
        "model.epochs=30",
        "execution.ray.placement_timeout_s=20",
    ]
    with (tmp_path / "search.err").open("w") as err:
        search = subprocess.Popen(
            [sys.executable, "-m", "mnist_hpo", *args], cwd=launch, env=ENV, stdout=subprocess.DEVNULL, stderr=err
        )
    killed_at: float | None = None
    deadline = time.monotonic() + 900
    try:
        while search.poll() is None:
            assert time.monotonic() < deadline, "the search neither finished nor stopped in 15 minutes"
            running = [run for run in fold_runs(client) if run.info.status == "RUNNING"]
            # When: the second node dies while all three workers train, every CPU left taken by the other two
            if killed_at is None and len(running) == 3 and second.worker_pids():
                second.kill()
                killed_at = time.monotonic()
            time.sleep(0.5)
    finally:
        if search.poll() is None:
            search.kill()
    stderr = (tmp_path / "search.err").read_text()
    assert killed_at is not None, "the second node was never killed mid-search"

    # Then: it stops within the placement timeout (and a margin), in one line that says why and how to resume
    assert search.returncode == 1, stderr[-3000:]
    assert time.monotonic() - killed_at < 20 + 60
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(
        "cluster: for 20 s the cluster's 1 alive node(s) had room for 2 of the search's 3 workers ({'CPU': 1.0} each)"
    ), stderr[-3000:]
    assert last.endswith(f"run `python -m mnist_hpo {' '.join(args)}` again to resume")
    assert "the search's runs are marked FAILED (unfinished fits: candidate " in last  # which fits it stopped
    assert "Traceback" not in stderr
    # No run is left RUNNING; the lost fit's run says why it failed; finished fits are in the fit store
    levels = runs_by_level(tracking_server)
    assert "RUNNING" not in {run.info.status for runs in levels.values() for run in runs}
    (search_run,) = levels["search"]
    assert search_run.info.status == "FAILED"
    failed = [run for run in levels["fold"] if run.info.status == "FAILED"]
    assert failed and all("could not be placed" in run.data.tags["mnist_hpo.error"] for run in failed)
    finished = [run for run in levels["fold"] if run.info.status == "FINISHED"]
    stored = {run.data.tags["mnist_hpo.fit_key"] for run in finished}
    assert stored <= {path.stem for path in (launch / "mlruns" / "fits").rglob("*.npz")}
