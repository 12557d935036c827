"""Hugging Face model folders the tests write themselves (no hub, no download)."""

from __future__ import annotations

from pathlib import Path

# ChatML, as Qwen and many others use: not Phi-3's <|user|> format, and no <|end|> token in the vocabulary
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def write_tiny_llama(folder: Path) -> Path:
    """A Llama-architecture chat model folder as `save_pretrained` writes it: config, tokenizer with a chat template,
    safetensors. Randomly initialised and small (a few hundred thousand parameters): no download."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from data.synthetic import generate_split

    texts = [m["content"] for row in generate_split("train_sft", 300) for m in row["messages"]]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ChatML's: no Phi-3 <|end|> here
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", additional_special_tokens=specials[1:]
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
