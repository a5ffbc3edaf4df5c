"""The resume identity of a search: a hash of everything that decides its result, by the fit key's rule."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict

import joblib

from mnist_hpo.configuration.schema import RESULT_NEUTRAL_GROUPS, Config


def resume_key(cfg: Config, data_fingerprint: str, keras_backend: str, versions: Mapping[str, str]) -> str:
    """What identifies a search across restarts: its config less the result-neutral groups, data, backend, versions.

    One rule with a fit's key (execution/fit_keys.py): what decides the result counts, how it runs
    does not. The ``execution`` and ``tracking`` groups are left out whole (RESULT_NEUTRAL_GROUPS),
    so a restart with more workers or another store still finds its interrupted search; other
    numerics versions (``fit_keys.numerics_versions``) train other weights, so a restart after an
    upgrade starts a new search run, as each of its fits trains anew, instead of mixing the two.
    """
    deciding = {group: value for group, value in asdict(cfg).items() if group not in RESULT_NEUTRAL_GROUPS}
    return joblib.hash([deciding, data_fingerprint, keras_backend, dict(versions)], hash_name="sha1")[:16]
