"""The house's shape: imports go one way, heavy libraries stay behind their edges, one result identity."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

import pytest
from conftest import ROOT, compose_config

from mnist_hpo.configuration.schema import EXECUTION_KEYS, ExecutionConfig, moved_key
from mnist_hpo.execution.estimator import build_estimator
from mnist_hpo.execution.fit_keys import fit_key
from mnist_hpo.tracking.identity import resume_key

VERSIONS = {"keras": "3.15", "tensorflow": "2.20"}

PACKAGE = ROOT / "mnist_hpo"


def module_name(path: Path) -> str:
    """``mnist_hpo/tracking/store.py`` -> ``mnist_hpo.tracking.store``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``mnist_hpo`` module ``path`` imports, at any depth, except under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnist_hpo"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("mnist_hpo")}
    return found


def test_no_import_cycle_among_the_package_modules():
    graph = {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        if state.get(module) == "open":
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(module) :], module]))
        state[module] = "open"
        for target in graph.get(module, ()):
            visit(target, [*trail, module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


# The package's folders, each importing only from itself and the folders before it. The modules at
# the package's root (the entry points, the session, the runner, the study) sit above them all.
FOLDERS = (
    "configuration",
    "environment",
    "data",
    "model",
    "search",
    "execution",
    "checks",
    "tracking",
    "report",
)


def floor(module: str) -> int:
    """Where ``module`` sits: its folder's place in :data:`FOLDERS`, or above them all at the root."""
    parts = module.split(".")
    return FOLDERS.index(parts[1]) if len(parts) > 1 and parts[1] in FOLDERS else len(FOLDERS)


def test_the_folders_are_the_architecture_and_import_only_downwards():
    folders = sorted(path.name for path in PACKAGE.iterdir() if (path / "__init__.py").exists())
    assert sorted(FOLDERS) == folders
    for folder in FOLDERS:  # each says its job in its docstring
        assert ast.get_docstring(ast.parse((PACKAGE / folder / "__init__.py").read_text())), folder
    upward = {
        (module_name(path), target)
        for path in PACKAGE.rglob("*.py")
        for target in imported_modules(path)
        if target != "mnist_hpo" and floor(target) > floor(module_name(path))
    }
    assert upward == set()


def test_the_session_module_imports_no_keras_tensorflow_or_mlflow():
    code = "import sys, mnist_hpo.session; print(sorted({'keras', 'tensorflow', 'mlflow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def files_mentioning(*words: str) -> set[str]:
    """Package files whose text contains any of ``words``, relative to the package folder."""
    return {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if any(word in path.read_text() for word in words)
    }


def test_omegaconf_stays_at_the_edge():
    assert files_mentioning("DictConfig", "OmegaConf") <= {
        "__main__.py",
        "checks/composition.py",
        "configuration/schema.py",
        "tracking/sweep.py",
    }


def test_only_the_tracking_package_imports_mlflow():
    assert {
        path for path in files_mentioning("import mlflow", "from mlflow") if not path.startswith("tracking/")
    } == set()


def worker_pool_imports(path: Path) -> set[str]:
    """What ``path`` imports of Ray, loky or joblib's parallel machinery (joblib's hashing is not one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] in ("ray", "loky")}
            found |= {alias.name for alias in node.names if alias.name.startswith("joblib.")}
        elif isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            if (
                top in ("ray", "loky")
                or node.module.startswith("joblib.")
                or (top == "joblib" and {alias.name for alias in node.names} - {"hash", "Memory"})
            ):
                found.add(node.module)
    return found


def test_only_the_execution_package_runs_fits_in_parallel():
    """Worker pools live in execution/: nothing else imports Ray, loky or joblib's parallel machinery."""
    outside = {
        str(path.relative_to(PACKAGE)): worker_pool_imports(path)
        for path in PACKAGE.rglob("*.py")
        if not str(path.relative_to(PACKAGE)).startswith("execution/")
    }
    assert {path: names for path, names in outside.items() if names} == {}
    inside = set().union(*(worker_pool_imports(path) for path in (PACKAGE / "execution").rglob("*.py")))
    assert inside, "the check finds the imports execution/ does make"


def other_value(value: Any, hint: Any) -> Any:
    """A value of the field's type other than ``value``."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return f"{value}-other"
    return 1 if "int" in str(hint) else "other"  # an optional field left unset


def test_no_execution_key_reaches_what_a_fit_learns_or_the_resume_identity():
    """Every ``execution`` field, changed: the same fit key parameters and the same resume key.

    The fields come from the schema, so a result-deciding key put in ``execution`` (which the resume
    identity leaves out whole) fails here as soon as it reaches the estimator's result parameters.
    """
    cfg = compose_config("experiment=smoke")
    base_fit = build_estimator(cfg.model, cfg.execution, cfg.seed).result_params()
    base_key = resume_key(cfg, "data", "tensorflow", VERSIONS)
    hints = get_type_hints(ExecutionConfig)
    changed = 0
    for field in fields(ExecutionConfig):
        value = getattr(cfg.execution, field.name)
        if is_dataclass(value):
            continue  # execution.ray: Ray's own settings, read only by the Ray backend
        execution = replace(cfg.execution, **{field.name: other_value(value, hints[field.name])})
        assert build_estimator(cfg.model, execution, cfg.seed).result_params() == base_fit, field.name
        assert resume_key(replace(cfg, execution=execution), "data", "tensorflow", VERSIONS) == base_key, field.name
        changed += 1
    assert changed >= 10
    tracking = replace(cfg.tracking, experiment="elsewhere", enabled=False)
    assert resume_key(replace(cfg, tracking=tracking), "data", "tensorflow", VERSIONS) == base_key


@pytest.mark.parametrize(
    "override",
    [
        "model.activation=tanh",
        "model.epochs=4",
        "search.cv=3",
        "seed=7",
        "grid.activation=[relu]",
        "data.train_size=500",
    ],
)
def test_a_result_deciding_key_changes_the_resume_identity(override):
    base = resume_key(compose_config("experiment=smoke"), "data", "tensorflow", VERSIONS)
    assert resume_key(compose_config("experiment=smoke", override), "data", "tensorflow", VERSIONS) != base


def test_data_backend_and_numerics_versions_are_part_of_the_resume_identity_as_of_a_fit_key():
    cfg = compose_config("experiment=smoke")
    base = resume_key(cfg, "data", "tensorflow", VERSIONS)
    assert resume_key(cfg, "other data", "tensorflow", VERSIONS) != base
    assert resume_key(cfg, "data", "jax", VERSIONS) != base
    newer = VERSIONS | {"keras": "3.99"}
    assert resume_key(cfg, "data", "tensorflow", newer) != base
    # The same three things keep two fits apart.
    assert fit_key({}, "tensorflow", newer) != fit_key({}, "tensorflow", VERSIONS)


@pytest.mark.parametrize("key", EXECUTION_KEYS)
def test_every_execution_key_given_under_search_names_its_new_place(key):
    assert moved_key(f"search.{key}=2") == (
        f"search.{key}: moved to execution.{key} (how fits run, not what is searched); use execution.{key}=2"
    )
    assert moved_key("search.cv=2") is None and moved_key("execution.n_jobs=2") is None


@pytest.mark.parametrize("key", ["search.journal_dir", "execution.journal_dir"])
def test_the_journal_folder_names_the_fit_store_that_replaced_it(key):
    assert (
        moved_key(f"{key}=/tmp/j")
        == f"{key}: replaced by execution.fit_store_dir (finished fits are kept in the fit store)"
    )


def test_an_old_key_on_the_command_line_stops_with_one_line_and_exit_2(cli, tmp_path):
    result = cli("search.n_jobs=2", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: search.n_jobs: moved to execution.n_jobs (how fits run, not what is searched); use execution.n_jobs=2"
    ]
    assert not (tmp_path / "mlruns").exists()


def test_the_console_script_finds_the_config_from_any_folder(tmp_path):
    script = Path(sys.executable).with_name("mnist-hpo")
    result = subprocess.run([str(script), "--cfg", "job"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "execution:" in result.stdout and "n_jobs: 1" in result.stdout
