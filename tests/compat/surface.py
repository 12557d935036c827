"""What users and scripts depend on, as data: the CLI's commands and options, the profile's keys, the run summary's
keys. tests/test_compat.py compares it with what an earlier release recorded (tests/fixtures/compat/)."""

from __future__ import annotations

import json
from typing import Any


def cli_surface() -> dict[str, list[str]]:
    import typer.main

    from flows.cli import app

    group = typer.main.get_command(app)
    found: dict[str, list[str]] = {}

    def walk(command: Any, prefix: str) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            path = f"{prefix} {name}".strip()
            if getattr(sub, "commands", None):
                walk(sub, path)
            else:
                found[path] = sorted(opt for param in sub.params for opt in (param.opts or [param.name]))

    walk(group, "")
    return found


def profile_keys() -> list[str]:
    from flows.params import TunegateConfig

    schema = TunegateConfig.model_json_schema()
    defs = schema.get("$defs", {})
    keys: set[str] = set()

    def walk(node: dict, prefix: str) -> None:
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[1]]
        for option in node.get("anyOf", []) + node.get("oneOf", []):
            walk(option, prefix)
        for name, child in node.get("properties", {}).items():
            path = f"{prefix}.{name}" if prefix else name
            keys.add(path)
            walk(child, path)

    walk(schema, "")
    return sorted(keys)


def summary_keys() -> list[str]:
    from flows.summary import RunSummary

    keys: set[str] = set()

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for name, child in value.items():
                path = f"{prefix}.{name}" if prefix else name
                keys.add(path)
                walk(child, path)

    walk(RunSummary().model_dump(mode="json"), "")
    return sorted(keys)


if __name__ == "__main__":
    print(json.dumps({"cli": cli_surface(), "profile": profile_keys(), "summary": summary_keys()}, indent=1))
