"""How settings read in the Prefect UI's run form (it renders the flow parameter's JSON schema).

A setting whose empty value means "the default decides" (a version, a fine-tune parameter the model's own defaults
fill in) would show as a `str | None` toggle set to None; here it shows as an empty input whose description says
what empty means. A choice between models (the workspace: local or Azure ML) shows as one, not as raw JSON.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer

NULL = {"type": "null"}


def empty_means_default(schema: dict[str, Any]) -> None:
    """`anyOf: [X, null], default: null` -> X with no default: the form shows an empty X input."""
    for prop in schema.get("properties", {}).values():
        options = prop.get("anyOf")
        if options and NULL in options and "default" in prop and prop["default"] is None:
            rest = [option for option in options if option != NULL]
            if len(rest) == 1:
                del prop["anyOf"], prop["default"]
                prop.update(rest[0])
                if prop.get("type") == "boolean":  # a switch cannot be empty: a choice of the two values can
                    del prop["type"]
                    prop["enum"] = [True, False]


def as_choice(schema: dict[str, Any]) -> None:
    """A discriminated union's `oneOf` as `anyOf`, which the form shows as a choice of its options' titles."""
    if "oneOf" in schema:
        schema["anyOf"] = schema.pop("oneOf")
        schema.pop("discriminator", None)


class FormModel(BaseModel):
    """Settings shown in the run form: empty settings are left out of what the form is given, not sent as null."""

    model_config = ConfigDict(json_schema_extra=empty_means_default)

    @model_serializer(mode="wrap")
    def _without_empty(self, handler: Any) -> Any:
        return {key: value for key, value in handler(self).items() if value is not None}
