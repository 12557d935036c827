"""Bring your own foundation model: check a Hugging Face causal-LM folder and derive the registry tags an azureml
registry model carries (`tunegate model import`). Reads only small files (config, tokenizer config, the safetensors
headers): a 7 GB model is checked in milliseconds, before anything is copied."""

from __future__ import annotations

import json
import math
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


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's shape in one .safetensors file, from its header alone (8-byte length, then JSON)."""
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > 100_000_000:
                raise ValueError(f"header of {length} bytes")
            header = json.loads(handle.read(length))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        return {
            name: tuple(int(size) for size in tensor.get("shape", []))
            for name, tensor in header.items()
            if name != "__metadata__"
        }
    except (OSError, ValueError, TypeError, AttributeError, struct.error) as exc:
        raise ModelFolderError(f"{path.name} is not a readable safetensors file: {exc}") from None


def safetensors_parameters(path: Path) -> int:
    """Parameters in one .safetensors file, from its header alone."""
    return sum(math.prod(shape) for shape in safetensors_shapes(path).values())


# what a config may declare, at most: far above any real model, far below what would allocate terabytes at load
CONFIG_LIMITS = {
    "vocab_size": 4_000_000,
    "hidden_size": 65_536,
    "intermediate_size": 1_000_000,
    "num_hidden_layers": 1_000,
    "num_attention_heads": 1_024,
    "max_position_embeddings": 10_000_000,
}
EMBEDDING_NAMES = ("embed_tokens.weight", "wte.weight", "word_embeddings.weight", "embed_in.weight")


def check_declared_sizes(path: Path, config: dict, shapes: dict[str, tuple[int, ...]]) -> None:
    """The sizes config.json declares are numbers in range, and the vocabulary and width match the embedding the
    weights hold: a config that says 10^12 tokens would have transformers allocate before it fails."""
    for key, limit in CONFIG_LIMITS.items():
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= limit:
            raise ModelFolderError(
                f"{path / 'config.json'} declares {key}={value!r}: expected a whole number from 1 to {limit:,}"
            )
    embedding = next(
        (shape for name, shape in shapes.items() if name.endswith(EMBEDDING_NAMES) and len(shape) == 2), None
    )
    if embedding is None:
        return  # an architecture that names its embedding otherwise: the load itself checks the shapes
    for key, actual in (("vocab_size", embedding[0]), ("hidden_size", embedding[1])):
        declared = config.get(key)
        if declared is not None and declared != actual:
            raise ModelFolderError(
                f"{path / 'config.json'} declares {key}={declared:,} but the weights' embedding is "
                f"{embedding[0]:,} x {embedding[1]:,}: the config does not belong to these weights"
            )


def _allowed_targets(folder: Path) -> list[Path]:
    """Where a link in the folder may point: inside it, and for a Hugging Face cache snapshot
    (models--org--name/snapshots/<revision>, whose files are links to ../../blobs/) that model's blobs."""
    allowed = [folder]
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        allowed.append(folder.parent.parent / "blobs")
    return allowed


def check_files(folder: Path) -> None:
    """Refuse a folder with anything the import would copy that is not a regular file or folder of its own: a link
    that leaves it (a model folder must not smuggle ~/.ssh into the registry), a socket, a device, a pipe."""
    folder = folder.resolve()
    allowed = _allowed_targets(folder)
    leaving, special = [], []
    for entry in sorted(folder.rglob("*")):
        relative = entry.relative_to(folder)
        if entry.is_symlink():
            target = entry.resolve()
            if not any(target == root or target.is_relative_to(root) for root in allowed):
                leaving.append(f"{relative} -> {target}")
                continue
            if not target.exists():
                leaving.append(f"{relative} -> {target} (missing)")
                continue
            if target.is_dir():  # copied through, a link to a folder above it would recurse for ever
                leaving.append(f"{relative} -> {target} (a folder)")
                continue
        if not (entry.is_file() or entry.is_dir()):
            special.append(str(relative))
    if leaving:
        raise ModelFolderError(
            f"{folder} has links that point outside it: {'; '.join(leaving[:5])}"
            + (f" and {len(leaving) - 5} more" if len(leaving) > 5 else "")
            + ". Copy the files themselves into the folder (cp -L) and import that"
        )
    if special:
        raise ModelFolderError(f"{folder} holds entries that are not files or folders: {', '.join(special[:5])}")


def inspect_model_folder(path: Path) -> ModelFolder:
    """The folder as tunegate will use it, or ModelFolderError naming what is wrong."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ModelFolderError(f"{path} is not a folder: give the folder a Hugging Face model was saved to")
    check_files(path)
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
    shapes = {tensor: shape for name in weights for tensor, shape in safetensors_shapes(path / name).items()}
    check_declared_sizes(path, config, shapes)
    parameters = sum(math.prod(shape) for shape in shapes.values())
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


TEMPLATE_CHECK_S = 5.0
SAMPLE_CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello, who are you?"},
    {"role": "assistant", "content": "A model being imported."},
    {"role": "user", "content": "Say something short."},
]


def check_chat_template(path: Path, max_time_s: float = TEMPLATE_CHECK_S) -> None:
    """The tokenizer loads and its chat template renders a short conversation within `max_time_s` (a template is
    code: one that loops without end would hang every request). Endpoints also stop a slow render per request."""
    from transformers import AutoTokenizer

    from workspaces.local.model import TemplateTooSlow, render_prompts

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        rendered = render_prompts(tokenizer, [SAMPLE_CONVERSATION], max_time_s)[0]
    except TemplateTooSlow:
        raise ModelFolderError(
            f"{path}: its chat template took over {max_time_s:g} s to render a 4-message conversation; fix the "
            "template (tokenizer_config.json chat_template or chat_template.jinja)"
        ) from None
    except Exception as exc:  # noqa: BLE001 - whatever the tokenizer or template raises, the folder is the cause
        raise ModelFolderError(
            f"{path}: the tokenizer or its chat template fails on a short conversation: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(rendered, str) or "Say something short." not in rendered:
        raise ModelFolderError(f"{path}: the chat template's output leaves out the messages it is given")
