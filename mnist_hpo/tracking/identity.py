"""The resume identity of a search: a hash of everything that decides its result."""

from __future__ import annotations

from dataclasses import asdict

import joblib

from mnist_hpo.configuration.schema import RESULT_NEUTRAL_GROUPS, Config


def resume_key(cfg: Config, data_fingerprint: str, keras_backend: str) -> str:
    """What identifies a search across restarts: its config less the result-neutral groups, its data and backend.

    The ``execution`` and ``tracking`` groups are left out whole (config.RESULT_NEUTRAL_GROUPS),
    so a restart with more workers or another store still finds its interrupted search.
    """
    deciding = {group: value for group, value in asdict(cfg).items() if group not in RESULT_NEUTRAL_GROUPS}
    return joblib.hash([deciding, data_fingerprint, keras_backend], hash_name="sha1")[:16]
