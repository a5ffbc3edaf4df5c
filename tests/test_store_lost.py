"""The tracking store lost mid-search, as it happens: its database deleted, or its folder made read-only."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, store_uri
from mlflow_tree import runs_by_level

ARGS = ["experiment=smoke", "execution.progress=false", "execution.n_jobs=2", "model.epochs=12"]
# What every run prints on stderr before it starts: TensorFlow's and MLflow's start-up notes.
START_UP_NOISE = re.compile(r"^(WARNING: All log messages|I0000 |.* INFO mlflow\.store\.db\.utils: )")
# root writes through file modes; without these capabilities it meets them as any user does.
DROP_OVERRIDES = "-dac_override,-dac_read_search,-fowner"


def without_file_override() -> list[str]:
    """A command prefix that makes the search meet file permissions even when the tests run as root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    assert setpriv, "running as root, the read-only store test needs util-linux's setpriv to drop CAP_DAC_OVERRIDE"
    return [setpriv, f"--bounding-set={DROP_OVERRIDES}", f"--inh-caps={DROP_OVERRIDES}"]


def stored_fits(folder: Path) -> int:
    return len(list((folder / "mlruns" / "fits").glob("*/*.npz")))


def search_losing_its_store(folder: Path, lose: str) -> subprocess.CompletedProcess:
    """Run the search; once its first fit is in the fit store, lose the tracking store as ``lose`` says."""
    store = folder / "mlruns"
    prefix = without_file_override() if lose == "read-only" else []
    process = subprocess.Popen(
        [*prefix, sys.executable, "-m", "mnist_hpo", *ARGS],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "160"},
    )
    deadline = time.monotonic() + 300
    while stored_fits(folder) == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the search ended before its first fit was stored"
    if lose == "deleted":
        (store / "mlflow.db").unlink()
    else:
        store.chmod(0o555)
    stdout, stderr = process.communicate(timeout=600)
    store.chmod(0o755)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("lose", ["deleted", "read-only"])
def test_a_store_lost_mid_search_stops_it_in_one_line_and_a_rerun_restores_its_fits(tmp_path, lose):
    # Given a search whose tracking store is lost after its first fit (mlflow.db deleted, or mlruns/ read-only)
    result = search_losing_its_store(tmp_path, lose)
    # Then it stops with one line (no traceback from any worker), exit 1
    assert result.returncode == 1, result.stderr[-3000:]
    said = [line for line in result.stderr.splitlines() if line.strip() and not START_UP_NOISE.match(line)]
    assert len(said) == 1, "\n".join(said[:40])
    (line,) = said
    command = "python -m mnist_hpo " + " ".join(ARGS)
    # SQLite's own words for a database it can no longer write, whichever write met it first
    reason = "(attempt to write a readonly database|unable to open database file|disk I/O error|no such table: [a-z_]+)"
    expected = (
        re.escape(f"store lost: the tracking store {store_uri(tmp_path)} can no longer be written (")
        + reason
        + re.escape(
            f"); the fit store {tmp_path / 'mlruns' / 'fits'} keeps every finished fit; "
            f"restore the store, or point tracking.uri at a new one, and run `{command}` again to resume; details in "
        )
        + r"(?P<log>\S+)"
    )
    match = re.fullmatch(expected, line)
    assert match, line
    # And the details are in the job's log file
    log = Path(match["log"])
    assert log.is_file() and match[1] in log.read_text()
    kept = stored_fits(tmp_path)
    assert kept >= 1
    # When the store is back (a deleted database starts anew) and the same command runs again
    rerun = run_cli(*ARGS, cwd=tmp_path)
    # Then it finishes, restoring what the fit store kept instead of training it
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    restored = int(re.search(r"fits: \d+ trained, (\d+) restored from the fit store", rerun.stdout)[1])
    assert restored == kept
    statuses = {run.info.status for runs in runs_by_level(store_uri(tmp_path)).values() for run in runs}
    assert "RUNNING" not in statuses
