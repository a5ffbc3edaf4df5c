"""Hides credentials in anything the tool records or prints (run params, tags, config files, messages)."""

from __future__ import annotations

import re

# user:password@ in a URI's authority, and secret-looking query parameters (?token=..., &password=...).
USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<secret>[^/@\s]*)@")
SECRET_QUERY = re.compile(r"(?P<name>[?&](?:token|password|passwd|secret|api[_-]?key|access[_-]?key)=)[^&\s]*", re.I)
HIDDEN = "***"


def redact(text: str) -> str:
    """``text`` with every URI password and secret query value replaced by ``***``."""
    text = USERINFO.sub(lambda match: f"{match['scheme']}{match['user']}:{HIDDEN}@", text)
    return SECRET_QUERY.sub(lambda match: f"{match['name']}{HIDDEN}", text)
