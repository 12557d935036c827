"""Pick the foundation model and read its tags the way the notebook does: `ast.literal_eval`, never `eval`."""

from __future__ import annotations

import ast
from typing import TypeVar

from tasks.errors import stage
from tasks.settings import ModelSettings
from workspaces.ports import FoundationModel, ModelRegistry

FINETUNE_ALLOW_LIST = "finetune_compute_allow_list"
INFERENCE_ALLOW_LIST = "inference_compute_allow_list"
MODEL_SPECIFIC_DEFAULTS = "model_specific_defaults"
T = TypeVar("T")


class TagError(ValueError):
    """A model tag that is not the literal it should be."""


def parse_literal_tag(tags: dict[str, str], key: str, expected: type[T]) -> T | None:
    """The tag's value as a Python literal of `expected` type, or None when the model has no such tag.

    Anything but a literal (a call such as `__import__('os').system(...)`, a name) is refused by
    `ast.literal_eval`; that becomes an error naming the tag, not an execution.
    """
    if key not in tags:
        return None
    raw = tags[key]
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise TagError(f"model tag {key!r} is not a Python literal ({type(exc).__name__}): {raw[:120]!r}") from exc
    if not isinstance(value, expected):
        raise TagError(f"model tag {key!r} should be a {expected.__name__}, got {type(value).__name__}: {raw[:120]!r}")
    return value


def allow_list(model: FoundationModel, key: str) -> list[str] | None:
    value = parse_literal_tag(model.tags, key, list)
    if value is None:
        return None
    if not all(isinstance(item, str) for item in value):
        raise TagError(f"model tag {key!r} should be a list of VM size strings: {model.tags[key][:120]!r}")
    return [str(item) for item in value]


def model_specific_defaults(model: FoundationModel) -> dict[str, object]:
    value = parse_literal_tag(model.tags, MODEL_SPECIFIC_DEFAULTS, dict)
    return dict(value) if value is not None else {}


@stage("pick model")
def pick_model(registry: ModelRegistry, settings: ModelSettings) -> FoundationModel:
    model = registry.get_foundation_model(settings.name, version=settings.version, label=settings.label)
    # parse every tag now: a malformed tag fails here, before compute is created or a job submitted
    allow_list(model, FINETUNE_ALLOW_LIST)
    allow_list(model, INFERENCE_ALLOW_LIST)
    model_specific_defaults(model)
    return model
