"""The MLflow UI command and the links a search prints, opened in a real headless browser over real searches."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SMOKE_EPOCHS, compose_config, run_cli, store_uri
from mlflow import MlflowClient
from mlflow_tree import runs_by_level

from mnist_hpo.configuration.schema import ConfigError, TrackingConfig
from mnist_hpo.tracking.links import LOCAL_UI, check_ui_url, ui_base
from mnist_hpo.tracking.runs import MODEL_URI
from mnist_hpo.tracking.store import experiment_id, open_store
from mnist_hpo.ui import address, main, parser, server_command

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


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system Chromium; skips (before any search trains) where it or Playwright is missing."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (.ci/run installs Debian's chromium)")
    return CHROMIUM


@contextmanager
def chromium_page(executable: str) -> Iterator[Any]:
    """A page of a fresh headless Chromium: no UI mode remembered from an earlier visit, as on a user's first."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 900})
        finally:
            browser.close()


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


def test_ui_address_opens_the_experiment_in_model_training_mode(tmp_path):
    # Given a real store holding the project's experiment
    store = open_store(TrackingConfig(), tmp_path)
    found = experiment_id(store, "mnist-hpo")
    # Then the UI's address opens its runs table in Model-training mode, not MLflow 3's GenAI overview
    assert address(tmp_path / "mlruns", "mnist-hpo", "127.0.0.1", 5001) == (
        f"http://127.0.0.1:5001/#/experiments/{found}/runs?workflowType=machine_learning"
    )
    # And an experiment not created yet opens the experiments list, in the same mode
    assert address(tmp_path / "mlruns", "later", "127.0.0.1", 5001) == (
        "http://127.0.0.1:5001/#/experiments?workflowType=machine_learning"
    )
    assert parser().parse_args([]).experiment == "mnist-hpo"


def test_links_start_at_the_tracking_server_with_its_password_hidden():
    local = compose_config("experiment=smoke").tracking
    assert ui_base(local) == LOCAL_UI == "http://127.0.0.1:5000"
    server = compose_config("tracking.uri='http://alice:s3cret@mlflow.example:8080/?token=abc'").tracking
    assert ui_base(server) == "http://alice:***@mlflow.example:8080"
    chosen = compose_config(
        "tracking.uri=http://mlflow.example:8080", "tracking.ui_url=https://ui.example/mlflow/"
    ).tracking
    assert ui_base(chosen) == "https://ui.example/mlflow"


@pytest.mark.parametrize(
    "value", ["ftp://ui.example", "127.0.0.1:5000", "http://ui.example/?x=1", "http://", "http://a b"]
)
def test_ui_url_must_be_a_web_address(value):
    with pytest.raises(ConfigError, match=r"^tracking\.ui_url: .* must be http\(s\)://host\[:port\]\[/path\]"):
        check_ui_url(compose_config(f"tracking.ui_url='{value}'").tracking)


@pytest.mark.parametrize("value", ["http://127.0.0.1:5001", "https://mlflow.example/team/ui/", "http://[::1]:5000"])
def test_ui_url_accepts_http_addresses(value):
    check_ui_url(compose_config(f"tracking.ui_url='{value}'").tracking)


def test_a_bad_ui_url_stops_the_cli_before_training_with_one_line(tmp_path):
    result = run_cli("experiment=smoke", "tracking.ui_url=http://bob:pw@ui.example", cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        "error: tracking.ui_url: 'http://bob:***@ui.example' must be http(s)://host[:port][/path], "
        "e.g. http://127.0.0.1:5000, or null for the local UI"
    )
    assert not (tmp_path / "mlruns").exists()  # nothing trained, no store


def test_a_search_ends_by_saying_where_everything_is(smoke_run):
    # Given the default search, tracked in the local store with no tracking.ui_url
    folder, result = smoke_run
    (search,) = runs_by_level(store_uri(folder))["search"]
    tail = result.stdout[result.stdout.index("Where everything is") :].splitlines()
    # Then its last lines name the folder, the table, both MLflow pages, the model and how to open the UI
    page = f"{LOCAL_UI}/#/experiments/{search.info.experiment_id}/runs"
    assert tail[1:] == [
        f"  output folder      {folder / 'outputs' / 'smoke'}",
        f"  cv_results.csv     {folder / 'outputs' / 'smoke' / 'cv_results.csv'}",
        f"  MLflow search run  {page}/{search.info.run_id}?workflowType=machine_learning",
        f"  MLflow experiment  {page}?workflowType=machine_learning",
        f"  best model         {search.data.tags[MODEL_URI]}",
        "  MLflow UI          python -m mnist_hpo.ui  (serves the links above)",
    ]


@pytest.mark.browser
def test_browser_shows_search_candidates_folds_and_epoch_curves(chromium, smoke_run):
    folder, _ = smoke_run
    levels = runs_by_level(store_uri(folder))
    search, candidate, fold = levels["search"][0], levels["candidate"][0], levels["fold"][0]
    experiment = search.info.experiment_id
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mnist_hpo.ui", "--port", str(port)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(f"{base}/health")
        with chromium_page(chromium) as page:
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
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def linked_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    """A real smoke search whose printed links point at the port a UI will serve: its folder, port, output."""
    folder = tmp_path_factory.mktemp("linked")
    port = free_port()
    result = run_cli(
        "experiment=smoke", "hydra.run.dir=outputs/linked", f"tracking.ui_url=http://127.0.0.1:{port}", cwd=folder
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, port, result.stdout


@pytest.fixture(scope="module")
def ui_address(linked_search: tuple[Path, int, str]) -> Iterator[str]:
    """``python -m mnist_hpo.ui`` serving the linked search's store; yields the address it printed."""
    folder, port, _ = linked_search
    log = folder / "ui.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "mnist_hpo.ui", "--port", str(port)],
            cwd=folder, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        printed = re.search(r"^MLflow UI: (\S+)", log.read_text(), re.M)
        assert printed, log.read_text()[-2000:]
        yield printed[1]
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.browser
def test_ui_address_shows_runs_in_model_training_mode_and_compares_candidates(chromium, linked_search, ui_address):
    folder, port, _ = linked_search
    levels = runs_by_level(store_uri(folder))
    (search,) = levels["search"]
    candidates = sorted(run.info.run_name for run in levels["candidate"])
    assert ui_address == (
        f"http://127.0.0.1:{port}/#/experiments/{search.info.experiment_id}/runs?workflowType=machine_learning"
    )
    with chromium_page(chromium) as page:
        # When a fresh browser opens the address the UI printed
        page.goto(ui_address)
        # Then it shows the experiment's runs table, the search run in it
        table = page.get_by_role("row")
        table.filter(has_text=search.info.run_name).first.wait_for(timeout=90000)
        page.get_by_text(f"{sum(map(len, levels.values()))} matching runs").first.wait_for(timeout=60000)
        # in Model-training mode: "Runs", not GenAI's "Training runs" beside its traces overview
        assert page.get_by_role("heading", name="Runs", exact=True).is_visible()
        for genai in ("Training runs", "Observability", "Token Usage", "Sessions"):
            assert page.get_by_text(genai, exact=True).count() == 0, genai
        page.screenshot(path=str(ARTIFACTS / "ui_runs_training_mode.png"), full_page=True)
        # When two candidates of the search are selected and compared
        table.filter(has_text=search.info.run_name).first.get_by_role("button").first.click()  # expand its children
        for name in candidates:
            row = table.filter(has_text=name).first
            row.wait_for(timeout=60000)
            row.get_by_role("checkbox").first.check()
        page.get_by_role("button", name="Compare", exact=True).click()
        # Then the comparison shows both, side by side
        page.get_by_text(f"Comparing {len(candidates)} Runs").first.wait_for(timeout=60000)
        for name in candidates:
            page.get_by_text(name, exact=True).first.wait_for(timeout=60000)
        assert all(run.info.run_id in page.url for run in levels["candidate"])
        page.screenshot(path=str(ARTIFACTS / "ui_compare_candidates.png"), full_page=True)


@pytest.mark.browser
def test_links_a_search_prints_open_its_run_and_experiment(chromium, linked_search, ui_address):
    folder, port, stdout = linked_search
    (search,) = runs_by_level(store_uri(folder))["search"]
    run_id, experiment = search.info.run_id, search.info.experiment_id
    names = "output folder|cv_results.csv|MLflow search run|MLflow experiment|best model|MLflow UI"
    printed = dict(re.findall(rf"^  ({names}) +(.+)$", stdout, re.M))
    # The search said where everything is
    experiment_page = f"http://127.0.0.1:{port}/#/experiments/{experiment}/runs"
    assert printed["MLflow search run"] == f"{experiment_page}/{run_id}?workflowType=machine_learning"
    assert printed["MLflow experiment"] == f"{experiment_page}?workflowType=machine_learning"
    assert printed["output folder"] == str(folder / "outputs" / "linked")
    assert Path(printed["cv_results.csv"]).is_file()
    assert printed["best model"] == MlflowClient(store_uri(folder)).get_run(run_id).data.tags[MODEL_URI]
    assert "MLflow UI" not in printed  # tracking.ui_url names the UI: nothing to start
    with chromium_page(chromium) as page:
        # When the printed search-run link is opened
        page.goto(printed["MLflow search run"])
        # Then it is that search run's page, in Model-training mode, with its headline metric
        page.get_by_text("best_cv_score", exact=True).first.wait_for(timeout=90000)
        page.get_by_text(search.info.run_name, exact=True).first.wait_for(timeout=60000)
        assert run_id in page.url and page.get_by_text("Training runs", exact=True).count() == 0
        page.screenshot(path=str(ARTIFACTS / "ui_search_run_link.png"), full_page=True)
        # And the experiment link opens the runs table holding it
        page.goto(printed["MLflow experiment"])
        page.get_by_role("row").filter(has_text=search.info.run_name).first.wait_for(timeout=60000)
