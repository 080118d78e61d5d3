"""One-job refresh configs for the tests and the refresh bench: `write_job(path, **fields)`."""
from __future__ import annotations

import json
from pathlib import Path


def write_job(path: Path, *, extra: str = "", **fields) -> Path:
    """Write a refresh config of one [[job]] with `fields` (strings, lists of strings, numbers:
    JSON spells them as TOML does), then the raw TOML `extra`; returns `path`."""
    lines = ["[[job]]", *(f"{key} = {json.dumps(value)}" for key, value in fields.items())]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path
