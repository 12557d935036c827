"""tunegate's chat model as an MLflow pyfunc: the folder the pipeline's `mlflow_model_folder` output is, which
`mlflow models serve` can serve too. Only what writes or serves through MLflow imports this module."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from workspaces.local.model import HfChat


class ChatModel(HfChat, mlflow.pyfunc.PythonModel):
    """MLflow pyfunc over a HF folder: input {"input_string": [[messages]], "parameters": {...}} -> [str]."""

    # predict takes the scoring contract's dict and checks it itself; MLflow's type-hint validation cannot describe
    # it and would warn "Add type hints" on every import (a warning filter does not hold: MLflow resets them)
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.load(context.artifacts["hf_model"])

    def predict(self, context, model_input, params=None):
        """The scoring contract from wherever it comes: the local endpoint passes plain JSON; `mlflow models serve`
        passes `{"inputs": {"input_string": ..., "parameters": {...}}, "params": {...}}` as a DataFrame (one row)
        plus the signature's params. Generation settings: the contract's defaults, then `parameters`, then the
        `params` a caller gave (MLflow fills the ones not given with None), checked like the endpoint checks them."""
        from workspaces.scoring import merged_parameters

        payload = _plain(model_input if isinstance(model_input, dict) else dict(model_input))
        parameters = payload.get("parameters") or {}
        while isinstance(parameters, list):  # [{...}] (a column, a record) -> {...}
            parameters = parameters[0] if parameters else {}
        parameters = parameters if isinstance(parameters, dict) else {}  # a missing column reads as None or NaN
        conversations = _plain(payload["input_string"])
        if (
            conversations
            and isinstance(conversations[0], list)
            and conversations[0]
            and isinstance(conversations[0][0], list)
        ):  # a DataFrame row of conversations: [[conversation, ...]] -> [conversation, ...]
            conversations = [conversation for row in conversations for conversation in row]
        return self.chat(conversations, merged_parameters(parameters, params).model_dump())


def _plain(value: Any) -> Any:
    """numpy arrays and pandas Series (what MLflow's server makes of JSON) back to lists and dicts."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):
        value = value.tolist()
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def chat_signature() -> Any:
    """What `mlflow models serve` accepts: `{"inputs": {"input_string": [conversation, ...], "parameters": {...}},
    "params": {...}}`, the seed's contract under MLflow's `inputs`, generation settings in either place (params
    win). Without a signature with params, MLflow never passes `params` to predict."""
    from mlflow.models import ModelSignature
    from mlflow.types import DataType
    from mlflow.types.schema import Array, ColSpec, Object, ParamSchema, ParamSpec, Property, Schema

    message = Object([Property("role", DataType.string), Property("content", DataType.string)])
    settings = [
        ("do_sample", DataType.boolean),
        ("temperature", DataType.double),
        ("top_p", DataType.double),
        ("max_new_tokens", DataType.long),
    ]
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(Array(Array(message)), "input_string"),
                ColSpec(Object([Property(n, t, required=False) for n, t in settings]), "parameters", required=False),
            ]
        ),
        outputs=Schema([ColSpec(DataType.string)]),
        params=ParamSchema([ParamSpec(name, dtype, None) for name, dtype in settings]),
    )


def save_pyfunc(hf_dir: Path, out_dir: Path) -> Path:
    """An MLflow model folder (the pipeline's `mlflow_model_folder` output) around a HF folder. Quietly: it is
    written in the run's own process, whose output is the user's (MLflow warns on every save that a Python object is
    pickled, which is how a PythonModel is saved, and that no input example was given)."""
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            mlflow.pyfunc.save_model(
                path=str(out_dir),
                python_model=ChatModel(),
                artifacts={"hf_model": str(hf_dir)},
                pip_requirements=["transformers", "torch", "tokenizers"],
                signature=chat_signature(),
            )
    finally:
        pyfunc_logger.setLevel(level)
    return out_dir
