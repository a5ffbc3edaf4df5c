"""``python -m mnist_hpo --help``: what the tool is, examples that run, and every config group."""

from __future__ import annotations

import shlex

from conftest import CONF, compose_config, run_cli


def example_commands(help_text: str) -> list[list[str]]:
    """The example command lines the help shows, as argument lists without their comments."""
    lines = [line.strip() for line in help_text.splitlines() if line.strip().startswith("python -m mnist_hpo ")]
    return [shlex.split(line.split("  #")[0])[3:] for line in lines]


def test_help_says_what_the_tool_is_shows_examples_and_lists_the_groups(tmp_path):
    # When a user asks the real CLI for help
    result = run_cli("--help", cwd=tmp_path, timeout=300)
    # Then it exits 0 and starts by saying what the tool is
    assert result.returncode == 0, result.stderr[-2000:]
    first = result.stdout.lstrip().splitlines()[0]
    assert first.startswith("mnist_hpo: hyperparameter search over Keras CNNs on MNIST")
    assert "MLflow" in result.stdout and "python -m mnist_hpo.ui" in result.stdout
    # And shows three example commands, every one of which composes (the sweep: each of its jobs)
    examples = example_commands(result.stdout)
    assert len(examples) == 3, result.stdout[:2000]
    for arguments in examples:
        if arguments[:1] == ["-m"]:
            key, values = next(a.split("=", 1) for a in arguments[1:] if "," in a)
            for value in values.split(","):
                compose_config(*(f"{key}={value}" if a.startswith(f"{key}=") else a for a in arguments[1:]))
        else:
            compose_config(*arguments)
    # And still lists every config group with its options, as Hydra's $APP_CONFIG_GROUPS does
    assert "== Configuration groups ==" in result.stdout
    for group in sorted(path for path in CONF.iterdir() if path.is_dir() and path.name != "hydra"):
        options = ", ".join(sorted(option.stem for option in group.glob("*.yaml")))
        assert f"\n{group.name}: {options}\n" in result.stdout, group.name
    assert "--hydra-help" in result.stdout
    assert not (tmp_path / "outputs").exists()  # help runs nothing
