"""The local workspace's model side: a tiny Phi-3 built from scratch, its chat tokenizer, and the MLflow
pyfunc wrapper that serves it. Heavy imports (torch, transformers) stay inside functions so that
importing the workspace stays cheap for the flow process."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow.pyfunc

SPECIAL_TOKENS = ["<|endoftext|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
# Phi-3's chat format: <|user|>\n...<|end|>\n<|assistant|>\n...<|end|>\n
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

TINY_PHI3 = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 800):
    """A byte-level BPE tokenizer trained on the dataset's own text, with Phi-3's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|endoftext|>",
        pad_token="<|pad|>",
        additional_special_tokens=SPECIAL_TOKENS[2:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_foundation(texts: Iterable[str], out_dir: Path, seed: int = 0) -> Path:
    """Create the foundation model once: tokenizer + randomly initialised tiny Phi-3, saved as a HF folder."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    tokenizer = train_tokenizer(texts)
    torch.manual_seed(seed)
    config = Phi3Config(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|end|>"),
        tie_word_embeddings=False,
        **TINY_PHI3,
    )
    model = Phi3ForCausalLM(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class PromptTooLong(ValueError):
    """The prompt has more tokens than the endpoint accepts."""

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"prompt is {tokens} tokens; this endpoint accepts at most {limit} (max_prompt_tokens)")
        self.tokens, self.limit = tokens, limit


class TemplateTooSlow(PromptTooLong):
    """The model's chat template took longer than the request's time to render the conversation."""

    def __init__(self, seconds: float) -> None:
        ValueError.__init__(
            self, f"the model's chat template did not render this conversation within {seconds:g} s; send fewer or "
            "shorter messages"
        )  # fmt: skip
        self.tokens, self.limit = 0, 0


def render_prompts(tokenizer: Any, conversations: list[list[dict[str, str]]], max_time_s: float | None) -> list[str]:
    """The chat template applied to each conversation, stopped after `max_time_s`. A template is code from the model
    folder (Jinja, sandboxed but free to loop): a nested loop over a long conversation renders for minutes. The
    rendering thread is traced while it renders, and the trace raises once the time is up."""
    import sys

    def render() -> list[str]:
        return [
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
            for messages in conversations
        ]

    if not max_time_s:
        return render()
    deadline = time.monotonic() + max_time_s
    ticks = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal ticks
        ticks += 1
        if ticks % 256 == 0 and time.monotonic() > deadline:  # every line of the template's code is an event
            raise TemplateTooSlow(max_time_s)
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        return render()
    finally:
        sys.settrace(previous)


def generate(
    model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], parameters: dict[str, Any], **limits: Any
) -> list[str]:
    """One reply per conversation, generated as one left-padded batch, within `limits` (generation_inputs):
    max_prompt_tokens, max_time_s, stop."""
    import torch

    inputs, kwargs = generation_inputs(model, tokenizer, conversations, parameters, **limits)
    with torch.no_grad():
        output = model.generate(**inputs, **kwargs)
    width = inputs["input_ids"].shape[1]
    return [text.strip() for text in tokenizer.batch_decode(output[:, width:], skip_special_tokens=True)]


def generation_inputs(
    model: Any,
    tokenizer: Any,
    conversations: list[list[dict[str, str]]],
    parameters: dict[str, Any],
    *,
    max_prompt_tokens: int | None = None,
    max_time_s: float | None = None,
    stop: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """The prompts' tensors and `generate`'s settings, every limit applied: a prompt over `max_prompt_tokens` is
    refused (PromptTooLong) before any generation, generation stops after `max_time_s` (transformers' max_time) and
    as soon as `stop` (a threading.Event: the client left) is set. What a batch (`generate`) and a streamed reply
    (workspaces/local/streaming.py) share."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    started = time.monotonic()
    prompts = render_prompts(tokenizer, conversations, max_time_s)
    if max_time_s:  # the template's time counts against the request's: generation gets what is left
        max_time_s = max(0.1, max_time_s - (time.monotonic() - started))
    tokenizer.padding_side = "left"  # a decoder continues from the right end of every row
    if tokenizer.pad_token is None:  # many chat models ship none; left padding only needs some id, masked out
        tokenizer.pad_token = tokenizer.eos_token
    inputs = tokenizer(prompts, return_tensors="pt", add_special_tokens=False, padding=True).to(model.device)
    longest = int(inputs["attention_mask"].sum(dim=1).max())
    context = int(getattr(model.config, "max_position_embeddings", longest) or longest)
    limit = min(max_prompt_tokens or longest, context)
    if longest > limit:
        raise PromptTooLong(longest, limit)
    do_sample = bool(parameters.get("do_sample", False))
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(parameters.get("max_new_tokens", 50)),
        "do_sample": do_sample,
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        "eos_token_id": stop_token_ids(model, tokenizer),
    }
    if do_sample:
        kwargs.update(temperature=float(parameters.get("temperature", 1.0)), top_p=float(parameters.get("top_p", 1.0)))
    if max_time_s:
        kwargs["max_time"] = float(max_time_s)
    if stop is not None:

        class ClientGone(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

        kwargs["stopping_criteria"] = StoppingCriteriaList([ClientGone()])
    return inputs, kwargs


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Where a reply ends: the model's own end-of-turn tokens (generation_config), the tokenizer's eos, and Phi-3's
    `<|end|>` where the vocabulary has it; an imported model without `<|end|>` must not stop on the unknown token."""
    ids: list[Any] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids += configured if isinstance(configured, list) else [configured]
    ids.append(tokenizer.eos_token_id)
    if "<|end|>" in tokenizer.get_vocab():
        ids.append(tokenizer.convert_tokens_to_ids("<|end|>"))
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


class ChatModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc over a HF folder: input {"input_string": [[messages]], "parameters": {...}} -> [str]."""

    # predict takes the scoring contract's dict and checks it itself; MLflow's type-hint validation cannot describe
    # it and would warn "Add type hints" on every import (a warning filter does not hold: MLflow resets them)
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = context.artifacts["hf_model"]
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.model.eval()

    def to(self, device: str) -> ChatModel:
        """On the GPU for a local-cuda deployment, in the GPU's half precision (weights saved in fp32 by training)."""
        if device != "cpu":
            import torch

            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            self.model = self.model.to(device=device, dtype=dtype)
        return self

    def chat(self, conversations: list[list[dict[str, str]]], parameters: dict[str, Any], **limits: Any) -> list[str]:
        return generate(self.model, self.tokenizer, conversations, parameters, **limits)

    def stream(self, conversation: list[dict[str, str]], parameters: dict[str, Any], **limits: Any) -> Any:
        """One reply whose text comes piece by piece (a ReplyStream; call it in the event loop's thread)."""
        from workspaces.local.streaming import ReplyStream

        return ReplyStream(self.model, self.tokenizer, conversation, parameters, **limits)

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
    """An MLflow model folder (the pipeline's `mlflow_model_folder` output) around a HF folder."""
    mlflow.pyfunc.save_model(
        path=str(out_dir),
        python_model=ChatModel(),
        artifacts={"hf_model": str(hf_dir)},
        pip_requirements=["transformers", "torch", "tokenizers"],
        signature=chat_signature(),
    )
    return out_dir


def load_chat_model(model_dir: Path, device: str = "cpu") -> ChatModel:
    return mlflow.pyfunc.load_model(str(model_dir)).unwrap_python_model().to(device)
