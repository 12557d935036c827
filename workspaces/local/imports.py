"""Bring your own foundation model: check a Hugging Face causal-LM folder and derive the registry tags an azureml
registry model carries (`tunegate model import`). Reads only small files (config, tokenizer config, the safetensors
headers): a 7 GB model is checked in milliseconds, before anything is copied."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from workspaces.errors import WorkspaceError

# above this many parameters a CPU fine-tune takes hours even on a small sample: local-cuda only
CPU_FINETUNE_MAX_PARAMS = 150_000_000
# above this, a CPU answer takes many seconds per reply: local-cuda only for serving
CPU_INFERENCE_MAX_PARAMS = 1_500_000_000
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
SAFETENSORS_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}


class ModelFolderError(WorkspaceError):
    """The folder is not a model tunegate can fine-tune; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class ModelFolder:
    path: Path
    architecture: str
    model_type: str
    parameters: int
    max_positions: int | None
    weight_files: tuple[str, ...]


def _read_json(path: Path) -> dict:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelFolderError(f"{path.name} in {path.parent} cannot be read as JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ModelFolderError(f"{path.name} in {path.parent} is not a JSON object")
    return document


def safetensors_parameters(path: Path) -> int:
    """Parameters in one .safetensors file, from its header alone (8-byte length, then JSON)."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(handle.read(length))
    except (OSError, ValueError, struct.error) as exc:
        raise ModelFolderError(f"{path.name} is not a readable safetensors file: {exc}") from None
    total = 0
    for name, tensor in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for size in tensor.get("shape", []):
            count *= int(size)
        total += count
    return total


def inspect_model_folder(path: Path) -> ModelFolder:
    """The folder as tunegate will use it, or ModelFolderError naming what is wrong."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelFolderError(f"{path} is not a folder: give the folder a Hugging Face model was saved to")
    if not (path / "config.json").is_file():
        raise ModelFolderError(f"{path} has no config.json: not a Hugging Face model folder")
    config = _read_json(path / "config.json")
    architectures = [str(name) for name in config.get("architectures") or []]
    causal = [name for name in architectures if name.endswith("ForCausalLM")]
    if not causal:
        found = ", ".join(architectures) or f"none (model_type {config.get('model_type')!r})"
        raise ModelFolderError(
            f"{path} is not a causal language model: its config.json names the architectures {found}; tunegate "
            "fine-tunes chat models (an architecture ending in ForCausalLM, e.g. Phi3ForCausalLM)"
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(
            f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}): save it with tokenizer.save_pretrained(folder)"
        )
    tokenizer_config = _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").is_file() else {}
    has_template = bool(tokenizer_config.get("chat_template")) or any(
        (path / name).is_file() for name in ("chat_template.jinja", "chat_template.json")
    )
    if not has_template:
        raise ModelFolderError(
            f"{path} has no chat template (tokenizer_config.json chat_template, or chat_template.jinja): tunegate "
            "trains and serves conversations; take the instruct/chat variant of the model, or set "
            "tokenizer.chat_template and save the tokenizer again"
        )
    weights = sorted(p.name for p in path.glob("*.safetensors"))
    if not weights:
        others = sorted(p.name for p in path.glob("*.bin")) or sorted(p.name for p in path.glob("*.pt"))
        hint = f" (found {', '.join(others[:3])}: load it and save_pretrained(folder) writes safetensors)"
        raise ModelFolderError(f"{path} has no weights (*.safetensors){hint if others else ''}")
    parameters = sum(safetensors_parameters(path / name) for name in weights)
    positions = config.get("max_position_embeddings")
    return ModelFolder(
        path=path,
        architecture=causal[0],
        model_type=str(config.get("model_type", "")),
        parameters=parameters,
        max_positions=int(positions) if isinstance(positions, int) else None,
        weight_files=tuple(weights),
    )


def derived_tags(folder: ModelFolder) -> dict[str, str]:
    """The registry tags of an imported model, in the string forms an azureml registry model carries, from its
    size: where it may train and serve, and model_specific_defaults a practitioner would start from."""
    size = folder.parameters
    finetune = ["local-cpu", "local-cuda"] if size <= CPU_FINETUNE_MAX_PARAMS else ["local-cuda"]
    inference = ["local-cpu", "local-cuda"] if size <= CPU_INFERENCE_MAX_PARAMS else ["local-cuda"]
    large = size >= 1_000_000_000
    batch = 8 if size < 100_000_000 else 4 if size < 1_000_000_000 else 2 if size < 4_000_000_000 else 1
    context = 512 if size <= CPU_FINETUNE_MAX_PARAMS else 2048
    defaults = {
        "apply_deepspeed": "false",
        "apply_lora": "true",
        "lora_r": 8 if large else 16,
        "lora_alpha": 16 if large else 32,
        "lora_dropout": 0.05,
        # LoRA on a pretrained model: a few 1e-4; small models take a little more
        "learning_rate": 2e-4 if large else 5e-4,
        "lr_scheduler_type": "cosine",
        "num_train_epochs": 1 if large else 3,
        "per_device_train_batch_size": batch,
        "per_device_eval_batch_size": batch,
        "gradient_accumulation_steps": max(1, 8 // batch),
        "max_seq_length": min(folder.max_positions or context, context),
        "precision": "16",
        "gradient_checkpointing": "true" if large else "false",
    }
    return {
        "finetune_compute_allow_list": str(finetune),
        "inference_compute_allow_list": str(inference),
        "model_specific_defaults": str(defaults),
        "task": "chat-completion",
        "architecture": folder.architecture,
        "parameters": str(size),
    }


def parse_tags(pairs: list[str]) -> dict[str, str]:
    """`--tag key=value` pairs; the value may contain '='."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ModelFolderError(f"--tag {pair!r}: write key=value")
        tags[key.strip()] = value
    return tags
