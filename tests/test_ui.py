"""The MLflow UI command, opened in a real headless browser over a real smoke search."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import ROOT, SMOKE_EPOCHS, store_uri
from mlflow_tree import runs_by_level

from mnist_hpo.ui import main, parser, server_command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, seconds: float = 90) -> None:
    """Poll ``url`` until it answers 200."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


def test_ui_binds_to_localhost_by_default(tmp_path, monkeypatch):
    # Given no options, launched from a project folder
    monkeypatch.chdir(tmp_path)
    args = parser().parse_args([])
    assert args.host == "127.0.0.1"
    # Then the server it starts listens on localhost:5000 over ./mlruns
    command = server_command(args.store_dir, args.host, args.port)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "5000"
    store = tmp_path.resolve() / "mlruns"
    assert command[command.index("--backend-store-uri") + 1] == f"sqlite:///{store / 'mlflow.db'}"
    assert command[command.index("--default-artifact-root") + 1] == (store / "artifacts").as_uri()


def test_ui_refuses_a_folder_without_a_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "--store-dir: no MLflow store at" in capsys.readouterr().err


@pytest.mark.browser
def test_browser_shows_search_candidates_folds_and_epoch_curves(smoke_run):
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")
    folder, _ = smoke_run
    levels = runs_by_level(store_uri(folder))
    search, candidate, fold = levels["search"][0], levels["candidate"][0], levels["fold"][0]
    experiment = search.info.experiment_id
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo.ui", "--port", str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health")
        with playwright.sync_playwright() as driver:
            browser = driver.chromium.launch(
                executable_path=CHROMIUM,
                args=[
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{base}/#/experiments/{experiment}/runs")
            page.get_by_text(search.info.run_name, exact=True).first.wait_for(timeout=60000)
            total = sum(len(runs) for runs in levels.values())
            page.get_by_text(f"{total} matching runs").first.wait_for(timeout=60000)
            page.screenshot(path=str(ARTIFACTS / "ui_experiment.png"), full_page=True)
            for run in (candidate, fold):
                page.goto(f"{base}/#/experiments/{experiment}/runs/{run.info.run_id}")
                page.get_by_text(run.info.run_name).first.wait_for(timeout=60000)
            page.goto(f"{base}/#/experiments/{experiment}/runs/{fold.info.run_id}/model-metrics")
            page.get_by_text("loss").first.wait_for(timeout=60000)
            page.locator("svg.main-svg").first.wait_for(timeout=60000)  # a plotted chart
            page.wait_for_timeout(2000)
            page.screenshot(path=str(ARTIFACTS / "ui_fold_metrics.png"), full_page=True)
            # The chart plots what the UI's own API serves: one point per epoch.
            history = page.request.get(
                f"{base}/ajax-api/2.0/mlflow/metrics/get-history?run_id={fold.info.run_id}&metric_key=loss"
            ).json()["metrics"]
            assert sorted(point["step"] for point in history) == list(range(SMOKE_EPOCHS))
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
