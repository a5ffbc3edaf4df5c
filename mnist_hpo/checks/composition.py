"""The command line is composed and validated before Hydra runs a job, so a mistake is one line.

Hydra reports composition errors itself (a mistyped key, a value of the wrong type, an unknown
option) over several lines with a hint to set ``HYDRA_FULL_ERROR``, and exits 1; and a multirun
would train its first jobs before reaching one with a bad value. Composing the same overrides
first, every value of every sweep, finds both before any job starts, each as ``KEY: ...``.
"""

from __future__ import annotations

import dataclasses
import typing

from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from mnist_hpo.checks.validation import validate_config
from mnist_hpo.configuration.schema import Config, ConfigError, typed

# Flags after which Hydra does something other than compose this app's config (help, another
# config folder, printing the config): Hydra handles those command lines itself.
MULTIRUN_FLAGS = ("-m", "--multirun")


def first_line(text: str) -> str:
    """The first non-empty line of an error message."""
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def node_type(key: str) -> type | None:
    """The dataclass holding ``key`` (a dotted path from the root ``Config``), or None if it is not one."""
    node: typing.Any = Config
    for part in key.split(".")[:-1]:
        if not dataclasses.is_dataclass(node):
            return None
        hints = typing.get_type_hints(node)
        if part not in hints:
            return None
        node = hints[part]
    return node if dataclasses.is_dataclass(node) else None


def missing_key(key: str, hint: str) -> str:
    """The line for a key the config does not have: the keys its group has, or Hydra's hint to add it."""
    parent = node_type(key)
    if parent is None:
        return f"{key}: no such key; {first_line(hint.splitlines()[-1]).lower()}"
    group = key.rpartition(".")[0] or "the config"
    valid = ", ".join(field.name for field in dataclasses.fields(parent))
    return f"{key}: no such key in {group}; valid: {valid}"


def given_value(key: str, overrides: list[str]) -> str | None:
    """The value the command line gives ``key``, if one override sets it."""
    for override in overrides:
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return value
    return None


def composition_error(error: Exception, overrides: list[str]) -> str:
    """One line naming the key, the value and what is allowed, for an error Hydra met composing."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file:
        group, _, option = error.missing_cfg_file.rpartition("/")
        valid = ", ".join(error.options or [])
        return f"{group}: unknown option '{option}'; valid: {valid}"
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        key = cause.full_key
        message = first_line(getattr(cause, "msg", "") or str(cause))
        if message.startswith("Key '") and (" not in " in message or "is not in struct" in message):
            return missing_key(key, str(error))
        if "is not a ListConfig" in message:
            return f"{key}: {given_value(key, overrides)} is not a list; write {key}=[...]"
        return f"{key}: {message}"
    return f"{' '.join(overrides)}: {first_line(str(error))}"


def compositions(overrides: list[str]) -> list[list[str]]:
    """Override lists that together give every value of every discrete sweep once.

    Hydra's multirun composes one job per combination; one list per value finds the same errors.
    Sweeps of other kinds (an Optuna ``interval``) are left to Hydra and the sweeper.
    """
    fixed: list[str] = []
    sweeps: list[tuple[int, str, list[str]]] = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            fixed.append(override.input_line)
        elif override.is_discrete_sweep():
            key = override.get_key_element()
            first, *others = override.sweep_string_iterator()
            fixed.append(f"{key}={first}")
            sweeps.append((len(fixed) - 1, key, others))
    variants = [fixed]
    for position, key, values in sweeps:
        for value in values:
            variant = list(fixed)
            variant[position] = f"{key}={value}"
            variants.append(variant)
    return variants


def parses(override: str) -> bool:
    """Whether Hydra's override grammar accepts ``override``."""
    try:
        OverridesParser.create().parse_overrides([override])
    except OverrideParseException:
        return False
    return True


def check_command_line(argv: list[str], config_module: str) -> None:
    """Compose and validate ``argv``'s overrides as each job will; raise ``ConfigError`` (one line) if one fails.

    Command lines with other Hydra flags (``--help``, ``--cfg``, ``--config-dir`` ...) are Hydra's own.
    """
    if any(arg.startswith("-") and arg not in MULTIRUN_FLAGS for arg in argv):
        return
    overrides = [arg for arg in argv if arg not in MULTIRUN_FLAGS]
    try:
        variants = compositions(overrides)
    except OverrideParseException as error:
        bad = next((item for item in overrides if not parses(item)), " ".join(overrides))
        raise ConfigError(f"{bad}: not a valid override ({first_line(error.message)}); write key=value") from None
    with initialize_config_module(config_module=config_module, version_base="1.3"):
        for variant in variants:
            try:
                composed = compose("config", overrides=variant)
            except (ConfigCompositionException, MissingConfigException, OmegaConfBaseException) as error:
                raise ConfigError(composition_error(error, variant)) from None
            validate_config(typed(composed))
