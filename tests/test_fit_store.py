"""The fit store keeps finished fits as data only: exact round trips, damage survived, pickles never run."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from mnist_hpo.configuration.schema import ConfigError
from mnist_hpo.execution.fit_keys import fit_key, numerics_versions
from mnist_hpo.execution.fit_store import FitStore, StoredFit

ROOT = Path(__file__).resolve().parents[1]
HISTORY = {"loss": [2.25, 1.0 / 3.0, 0.125], "accuracy": [0.1, 0.5, 0.9]}
META = {"classes": list(range(10)), "input_shape": [28, 28, 1], "fit_time_s": 1.5, "run_id": "abc123", "versions": {}}


class Detonator:
    """Unpickling this creates ``marker``: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def key_of(name: str) -> str:
    return fit_key({"name": name}, "tensorflow", {"keras": "3.15"})


def small_weights(seed: int = 0) -> list[np.ndarray]:
    """Weights of one fixed size whatever the seed (so entries weigh the same)."""
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((5, 5, 1, 4)).astype(np.float32), np.zeros(4, np.float32)]


def store_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "mnist_hpo.execution.fit_store"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_hpo.execution.fit_store", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "160"},
    )


@pytest.fixture(scope="module")
def keras_weights() -> list[np.ndarray]:
    """Real weights of the smallest project CNN (Keras is imported here only, so spawned children stay light)."""
    from mnist_hpo.model.cnn import build_cnn

    return build_cnn(conv_filters=[1], dense_units=0).get_weights()


def test_round_trip_is_exact(tmp_path, keras_weights, caplog):
    store = FitStore(tmp_path / "fits")
    key = key_of("round trip")
    assert store.load(key) is None  # missing: silently None

    history = HISTORY | {"val_loss": [float("inf"), float("nan"), 0.5]}
    assert store.save(key, keras_weights, history, META)
    fit = store.load(key)

    assert isinstance(fit, StoredFit)
    assert len(fit.weights) == len(keras_weights)
    for saved, loaded in zip(keras_weights, fit.weights, strict=True):
        assert (saved.dtype, saved.shape, saved.tobytes()) == (loaded.dtype, loaded.shape, loaded.tobytes())
    assert {name: fit.history[name] for name in HISTORY} == HISTORY
    assert fit.history["val_loss"][0] == float("inf") and np.isnan(fit.history["val_loss"][1])
    assert fit.meta == META
    assert abs(time.time() - fit.created.timestamp()) < 60
    assert store.path(key) == tmp_path / "fits" / key[:2] / f"{key}.npz"
    assert store_warnings(caplog) == []


def test_load_marks_the_entry_used_and_keeps_its_creation_time(tmp_path):
    store = FitStore(tmp_path)
    key = key_of("used")
    store.save(key, small_weights(), HISTORY, META)
    path = store.path(key)
    os.utime(path, (1_600_000_000, 1_600_000_000))

    store.load(key)

    (entry,) = store.entries()
    assert abs(time.time() - entry.last_used.timestamp()) < 60
    assert entry.created.timestamp() == 1_600_000_000


def flip_weight_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    weight = small_weights()[0].tobytes()
    offset = data.index(weight) + len(weight) // 2
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def valid_npz_wrong_checksum(path: Path) -> None:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["checksum"] = np.frombuffer(b"0" * 64, dtype=np.uint8)
    with path.open("wb") as file:
        np.savez(file, **arrays)


def weight_changed_zip_rewritten(path: Path) -> None:
    """A changed weight in a fresh, valid zip (so zip's CRC-32 is right): only the store's checksum can tell."""
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["weight_000"].reshape(-1)[7] += 1.0
    with path.open("wb") as file:
        np.savez(file, **arrays)


def object_array(path: Path) -> None:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["weight_000"] = np.array([Detonator(path.parent / "MARKER")], dtype=object)
    with path.open("wb") as file:
        np.savez(file, **arrays)


def extra_array(path: Path) -> None:
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    with path.open("wb") as file:
        np.savez(file, **arrays, extra=np.zeros(3))


DAMAGES: dict[str, Callable[[Path], None]] = {
    "empty": lambda path: path.write_bytes(b""),
    "truncated half-way": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "garbage text": lambda path: path.write_text("garbage garbage"),
    "one weight byte flipped": flip_weight_byte,
    "valid npz, wrong checksum": valid_npz_wrong_checksum,
    "weight changed, zip rewritten": weight_changed_zip_rewritten,
    "object array": object_array,
    "unexpected array": extra_array,
}


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_a_damaged_entry_is_one_warning_then_retrained(tmp_path, caplog, damage):
    # Given a stored fit whose file is then damaged
    store = FitStore(tmp_path)
    key = key_of(damage)
    store.save(key, small_weights(), HISTORY, META)
    path = store.path(key)
    DAMAGES[damage](path)

    # When it is loaded
    loaded = store.load(key)

    # Then it is absent, named in exactly one warning line, and removed
    assert loaded is None
    (message,) = store_warnings(caplog)
    assert str(path) in message and "\n" not in message
    assert not path.exists()
    assert not (tmp_path / key[:2] / "MARKER").exists()

    # And the fit is stored again like any new one
    caplog.clear()
    assert store.save(key, small_weights(), HISTORY, META)
    assert store.load(key).history == HISTORY
    assert store_warnings(caplog) == []


def test_warning_reasons_say_what_is_wrong(tmp_path, caplog):
    store = FitStore(tmp_path)
    reasons = {}
    for damage in DAMAGES:
        key = key_of(damage)
        store.save(key, small_weights(), HISTORY, META)
        DAMAGES[damage](store.path(key))
        caplog.clear()
        store.load(key)
        reasons[damage] = store_warnings(caplog)[0]
    assert "empty file" in reasons["empty"]
    assert "not an npz archive" in reasons["garbage text"]
    assert "checksum mismatch" in reasons["valid npz, wrong checksum"]
    assert "checksum mismatch" in reasons["weight changed, zip rewritten"]
    assert "unexpected arrays ['extra']" in reasons["unexpected array"]
    assert "allow_pickle=False" in reasons["object array"]
    # The zip's own CRC-32 usually catches a flipped data byte before the store's checksum does.
    assert "CRC" in reasons["one weight byte flipped"] or "checksum" in reasons["one weight byte flipped"]


def test_pickles_in_the_store_are_never_executed(tmp_path, caplog):
    # Given a pickle that creates a marker when unpickled (checked on a copy), disguised as an entry and beside it
    marker = tmp_path / "MARKER"
    control = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(Detonator(control)))
    assert control.exists()
    payload = pickle.dumps(Detonator(marker))
    store = FitStore(tmp_path / "mlruns" / "fits")
    key = key_of("disguised")
    store.path(key).parent.mkdir(parents=True)
    store.path(key).write_bytes(payload)
    for beside in (store.folder / "evil.pkl", store.path(key).parent / "evil.pkl", store.folder / f"{key}.npz"):
        beside.write_bytes(payload)

    # When everything that reads the store runs
    assert store.load(key) is None
    store.entries()
    store.summary()
    store.prune(None)
    assert run_cli("list", cwd=tmp_path).returncode == 0
    assert run_cli("prune", "--all", cwd=tmp_path).returncode == 0

    # Then nothing was unpickled, the disguised entry was dropped, and other files were left alone
    assert not marker.exists()
    assert "not an npz archive" in store_warnings(caplog)[0]
    assert not store.path(key).exists()
    assert (store.folder / "evil.pkl").exists() and (store.folder / f"{key}.npz").exists()


def save_repeatedly(folder: str, key: str, times: int) -> int:
    """A writer process: save the same fit under ``key`` ``times`` times."""
    store = FitStore(folder)
    return sum(store.save(key, small_weights(), HISTORY, META) for _ in range(times))


def test_concurrent_writers_of_one_key_leave_one_valid_entry(tmp_path, caplog):
    key = key_of("contended")
    store = FitStore(tmp_path)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        writes = pool.starmap_async(save_repeatedly, [(str(tmp_path), key, 40)] * 2, chunksize=1)
        reads = 0
        while not writes.ready():
            fit = store.load(key)  # a reader meanwhile sees nothing or a whole entry, never a half one
            reads += fit is not None
            assert fit is None or fit.meta == META
            time.sleep(0.005)
        assert writes.get(timeout=120) == [40, 40]
    assert reads > 0

    assert store.load(key).meta == META
    assert [entry.key for entry in store.entries()] == [key]
    assert not list(tmp_path.rglob("*.tmp"))
    assert store_warnings(caplog) == []


def test_least_recently_used_entries_go_first(tmp_path):
    # Given a budget of two and a half entries
    probe = FitStore(tmp_path / "probe")
    probe.save(key_of("probe"), small_weights(), HISTORY, META)
    size = probe.entries()[0].bytes
    store = FitStore(tmp_path / "fits", budget_bytes=int(size * 2.5))
    keys = [key_of(f"lru {index}") for index in range(4)]

    def stored() -> set[str]:
        entries = store.entries()
        assert sum(entry.bytes for entry in entries) <= store.budget_bytes
        return {entry.key for entry in entries}

    # When the first entry is used again between saves
    store.save(keys[0], small_weights(0), HISTORY, META)
    store.save(keys[1], small_weights(1), HISTORY, META)
    assert stored() == {keys[0], keys[1]}
    assert store.load(keys[0]) is not None
    store.save(keys[2], small_weights(2), HISTORY, META)
    # Then the least recently used (the second) went
    assert stored() == {keys[0], keys[2]}
    assert store.load(keys[0]) is not None
    store.save(keys[3], small_weights(3), HISTORY, META)
    assert stored() == {keys[0], keys[3]}


def save_many(folder: str, budget: int, writer: int, times: int) -> int:
    """A writer process: save ``times`` different fits into a store with ``budget``."""
    store = FitStore(folder, budget_bytes=budget)
    return sum(store.save(key_of(f"writer {writer} fit {n}"), small_weights(n), HISTORY, META) for n in range(times))


def test_concurrent_evictions_tolerate_each_other(tmp_path, caplog):
    # Each writer evicts files the other may be evicting or writing at the same moment.
    probe = FitStore(tmp_path / "probe")
    probe.save(key_of("probe"), small_weights(), HISTORY, META)
    budget = int(probe.entries()[0].bytes * 3.5)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        written = pool.starmap(save_many, [(str(tmp_path / "fits"), budget, writer, 30) for writer in range(2)])
    assert written == [30, 30]
    store = FitStore(tmp_path / "fits")
    entries = store.entries()
    assert 0 < len(entries) <= 3 and sum(entry.bytes for entry in entries) <= budget
    assert all(store.load(entry.key) is not None for entry in entries)
    assert store_warnings(caplog) == []


def test_an_entry_larger_than_the_whole_budget_is_not_kept(tmp_path):
    store = FitStore(tmp_path, budget_bytes=1)
    assert store.save(key_of("huge"), small_weights(), HISTORY, META)
    assert store.entries() == []


def test_a_budget_must_be_positive_or_none(tmp_path):
    with pytest.raises(ValueError, match="budget_bytes: 0 must be positive"):
        FitStore(tmp_path, budget_bytes=0)


def test_keys_cannot_name_other_paths(tmp_path):
    with pytest.raises(ValueError, match="64 lowercase hex"):
        FitStore(tmp_path).path("../../etc/passwd")


def test_a_failed_save_is_one_warning_not_an_error(tmp_path, caplog):
    (tmp_path / "afile").write_text("not a folder")
    store = FitStore(tmp_path / "afile" / "fits")
    assert store.save(key_of("nowhere"), small_weights(), HISTORY, META) is False
    (message,) = store_warnings(caplog)
    assert "could not save" in message


def test_stale_temporary_files_of_killed_writers_are_cleaned(tmp_path):
    store = FitStore(tmp_path)
    key = key_of("killed")
    store.path(key).parent.mkdir(parents=True)
    stale = store.path(key).parent / f".{key}.abc123.tmp"
    fresh = store.path(key).parent / f".{key}.def456.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    assert store.prune(None) == []
    assert not stale.exists() and fresh.exists()


def unwritable_reason(folder: str) -> str:
    """In a forked child: drop root to ``nobody`` and report check_writable's error."""
    os.setgid(65534)
    os.setuid(65534)
    try:
        FitStore(folder, key_name="execution.fit_store_dir").check_writable()
    except ConfigError as error:
        return str(error)
    return "no error"


def test_check_writable_rejects_a_read_only_folder():
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        read_only = base / "read-only"
        read_only.mkdir(mode=0o555)
        read_only.chmod(0o555)
        if os.geteuid() == 0:  # root writes through 0o555, so check as nobody in a child
            with multiprocessing.get_context("fork").Pool(1) as pool:
                message = pool.apply(unwritable_reason, (str(read_only),))
        else:
            with pytest.raises(ConfigError) as raised:
                FitStore(read_only).check_writable()
            message = str(raised.value)
        assert message == (
            f"execution.fit_store_dir: {read_only} is not writable (permission denied); "
            "the fit store needs a folder it can write, or switch the store off"
        )
    finally:
        (base / "read-only").chmod(0o755)
        (base / "read-only").rmdir()
        base.rmdir()


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("under a file", "part of the path is a file, not a directory"),
        ("is a file", "it exists and is not a directory"),
        ("in /proc", "the folder cannot be created there"),
    ],
)
def test_check_writable_names_the_key_the_path_and_the_reason(tmp_path, where, reason):
    (tmp_path / "afile").write_text("a file")
    folder = {"under a file": tmp_path / "afile" / "fits", "is a file": tmp_path / "afile"}.get(where)
    if folder is None:
        if not Path("/proc/self").is_dir():
            pytest.skip("no /proc here")
        folder = Path("/proc/fit-store-test/fits")
    with pytest.raises(ConfigError) as raised:
        FitStore(folder, key_name="tracking.fits").check_writable()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"tracking.fits: {folder} is not writable ({reason})")


def test_check_writable_accepts_a_new_folder_and_leaves_nothing(tmp_path):
    FitStore(tmp_path / "mlruns" / "fits").check_writable()
    assert list((tmp_path / "mlruns" / "fits").iterdir()) == []


def test_fit_key_changes_with_everything_that_decides_a_fit_and_nothing_else():
    X = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    y = np.array([3, 7], dtype=np.uint8)
    params = {"conv_filters": [32, 64], "learning_rate": 0.001, "model": np.zeros_like}
    versions = {"keras": "3.15", "tensorflow": "2.21"}
    base = fit_key(params, "tensorflow", versions, X, y, None)
    assert len(base) == 64 and base == fit_key(params, "tensorflow", versions, X, y, None)

    # Unchanged: dict order, list vs tuple, NumPy vs Python scalars, memory layout
    reordered = dict(reversed(list(params.items())))
    assert fit_key(reordered, "tensorflow", dict(reversed(list(versions.items()))), X, y, None) == base
    same_values = params | {"conv_filters": (32, 64), "learning_rate": np.float64(0.001)}
    assert fit_key(same_values, "tensorflow", versions, np.asfortranarray(X), y, None) == base

    flipped = X.copy()
    flipped.reshape(-1).view(np.uint8)[5] ^= 1
    changed = [
        fit_key(params | {"learning_rate": 0.01}, "tensorflow", versions, X, y, None),
        fit_key(params | {"model": np.ones_like}, "tensorflow", versions, X, y, None),
        fit_key(params | {"epochs": 3}, "tensorflow", versions, X, y, None),
        fit_key(params, "jax", versions, X, y, None),
        fit_key(params, "tensorflow", versions | {"tensorflow": "2.22"}, X, y, None),
        fit_key(params, "tensorflow", versions, flipped, y, None),
        fit_key(params, "tensorflow", versions, X.astype(np.float64), y, None),
        fit_key(params, "tensorflow", versions, X.reshape(2, 4, 3, 1), y, None),
        fit_key(params, "tensorflow", versions, X, y, np.ones(2)),
        fit_key(params, "tensorflow", versions, X, y),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_fit_key_is_the_same_in_another_process():
    code = (
        "import numpy as np; from mnist_hpo.execution.fit_keys import fit_key; "
        "print(fit_key({'a': [1, 2.5], 'f': np.mean}, 'jax', {'keras': '3.15'}, np.arange(6.0)))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert other.stdout.strip() == fit_key({"f": np.mean, "a": [1, 2.5]}, "jax", {"keras": "3.15"}, np.arange(6.0))


def test_numerics_versions_are_major_minor():
    versions = numerics_versions("tensorflow")
    assert set(versions) == {"keras", "tensorflow"}
    assert all(version.count(".") == 1 for version in versions.values())
    assert numerics_versions("jax").keys() == {"keras", "jax", "jaxlib"}


def test_a_bad_entry_is_reported_on_stderr_from_a_loky_worker(tmp_path):
    store = FitStore(tmp_path)
    key = key_of("worker")
    store.save(key, small_weights(), HISTORY, META)
    store.path(key).write_text("garbage garbage")
    code = (
        "import sys; from joblib import Parallel, delayed; from mnist_hpo.execution.fit_store import FitStore; "
        f"print(Parallel(n_jobs=2, backend='loky')(delayed(FitStore(sys.argv[1]).load)('{key}') for _ in range(1)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[None]"
    assert f"fit store: ignored {store.path(key)}: not an npz archive" in result.stderr


def test_cli_lists_an_empty_store(tmp_path):
    result = run_cli("--store-dir", "mlruns", "list", cwd=tmp_path)
    assert result.returncode == 0
    assert "is empty" in result.stdout


def test_cli_lists_and_prunes(tmp_path):
    store = FitStore(tmp_path / "mlruns" / "fits")
    old, recent = key_of("old"), key_of("recent")
    store.save(old, small_weights(), HISTORY, META)
    store.save(recent, small_weights(), HISTORY, META)
    long_ago = datetime(2020, 1, 1).timestamp()
    os.utime(store.path(old), (long_ago, long_ago))

    listed = run_cli("list", cwd=tmp_path)
    assert listed.returncode == 0
    assert "2020-01-01" in listed.stdout and " 2 " in listed.stdout and "kB" in listed.stdout

    pruned = run_cli("prune", "--older-than", "2021-06-01", cwd=tmp_path)
    assert pruned.returncode == 0
    assert "Removed 1 fit last used before 2021-06-01" in pruned.stdout
    assert [entry.key for entry in store.entries()] == [recent]

    everything = run_cli("--store-dir", str(tmp_path / "mlruns"), "prune", "--all", cwd=ROOT)
    assert everything.returncode == 0
    assert "Removed 1 fit " in everything.stdout
    assert store.entries() == []


@pytest.mark.parametrize(
    "args", [("prune", "--older-than", "2026-13-45"), ("prune",), ("prune", "--all", "--older-than", "2026-11-01")]
)
def test_cli_rejects_bad_arguments_in_one_line(tmp_path, args):
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0] == result.stderr.strip().splitlines()[-1]
    if "2026-13-45" in args:
        assert "'2026-13-45' is not an ISO date" in errors[0]
