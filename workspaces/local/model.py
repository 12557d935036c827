"""The local workspace's model side: a tiny Phi-3 built from scratch, its chat tokenizer, generation, and the chat
model an endpoint serves. Heavy imports (torch, transformers) stay inside functions so that importing the workspace
stays cheap for the flow process; MLflow is not imported here at all (its pyfunc wrapper is
workspaces/local/pyfunc.py): an endpoint server loads a tunegate model folder without it (2.8 s of imports)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

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


class HfChat:
    """A HF causal LM and its tokenizer, answering chats: what an endpoint serves (the pyfunc ChatModel is one)."""

    def load(self, folder: str | Path) -> HfChat:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder)
        self.model.eval()
        return self

    def to(self, device: str) -> HfChat:
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


def tunegate_folder(model_dir: Path) -> Path | None:
    """The HF folder inside an MLflow model folder that save_pyfunc wrote (its `hf_model` artifact), or None for any
    other MLflow model."""
    import yaml

    try:
        document = yaml.safe_load((model_dir / "MLmodel").read_text(encoding="utf-8"))
        artifact = document["flavors"]["python_function"]["artifacts"]["hf_model"]["path"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        return None
    folder = model_dir / artifact
    return folder if (folder / "config.json").exists() else None


def load_chat_model(model_dir: Path, device: str = "cpu") -> HfChat:
    """The chat model of an MLflow model folder: tunegate's own straight from its HF folder (without importing
    MLflow), any other through mlflow.pyfunc."""
    folder = tunegate_folder(model_dir)
    if folder is not None:
        return HfChat().load(folder).to(device)
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(model_dir)).unwrap_python_model().to(device)


def __getattr__(name: str) -> Any:
    """Models saved before the pyfunc wrapper moved pickled it as workspaces.local.model.ChatModel."""
    if name in ("ChatModel", "save_pyfunc", "chat_signature"):
        from workspaces.local import pyfunc

        return getattr(pyfunc, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
