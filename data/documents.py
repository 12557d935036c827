"""Documents tunegate reads or writes for people: YAML profiles and prefect.yaml, JSON exports of a summary."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


class DocumentError(ValueError):
    """A document that cannot be read as what it should be; the message names the file."""


def read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise DocumentError(f"{path} is not valid YAML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DocumentError(f"{path} cannot be read: {exc}") from exc


def write_json(path: Path, payload: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2), encoding="utf-8")
    return path
