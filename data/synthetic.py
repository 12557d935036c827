"""A deterministic, ultrachat-shaped chat dataset generated in code (no hub access needed).

Rows look like HuggingFaceH4/ultrachat_200k: {prompt, prompt_id, messages: [{content, role}]}, in the four
splits train_sft/test_sft/train_gen/test_gen. The conversations follow learnable patterns (facts, arithmetic,
spelling, lists, rewrites), so a tiny model's eval loss visibly drops when it is fine-tuned on them.
A small, fixed share of rows is malformed on purpose, the way real dumps are, to exercise row validation.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

from data.splits import SPLITS

COUNTRIES = {
    "France": ("Paris", "French", "euro"),
    "Japan": ("Tokyo", "Japanese", "yen"),
    "Kenya": ("Nairobi", "Swahili", "shilling"),
    "Brazil": ("Brasilia", "Portuguese", "real"),
    "Canada": ("Ottawa", "English", "dollar"),
    "Egypt": ("Cairo", "Arabic", "pound"),
    "India": ("New Delhi", "Hindi", "rupee"),
    "Norway": ("Oslo", "Norwegian", "krone"),
    "Peru": ("Lima", "Spanish", "sol"),
    "Poland": ("Warsaw", "Polish", "zloty"),
    "Chile": ("Santiago", "Spanish", "peso"),
    "Vietnam": ("Hanoi", "Vietnamese", "dong"),
}
WORDS = [
    "garden",
    "river",
    "planet",
    "window",
    "candle",
    "forest",
    "bridge",
    "market",
    "rocket",
    "pencil",
    "harbor",
    "meadow",
    "castle",
    "violin",
    "desert",
    "lantern",
    "island",
    "orchard",
    "thunder",
    "compass",
]
ADJECTIVES = ["quiet", "bright", "ancient", "small", "busy", "golden", "cold", "gentle", "hidden", "endless"]
FOLLOW_UPS = [
    "Thanks! Can you say it again in one short sentence?",
    "Great, can you repeat that briefly?",
    "Could you summarize that for me?",
]

SPLIT_SIZES = dict(zip(SPLITS, (1.0, 0.12, 1.2, 0.14), strict=True))  # ratios as in ultrachat_200k


def _capital(rng: random.Random) -> tuple[str, str, str]:
    country = rng.choice(list(COUNTRIES))
    capital, language, currency = COUNTRIES[country]
    kind = rng.randrange(3)
    if kind == 0:
        return (
            f"What is the capital of {country}?",
            f"The capital of {country} is {capital}.",
            f"{capital} is the capital of {country}.",
        )
    if kind == 1:
        return (
            f"Which language is spoken in {country}?",
            f"The main language of {country} is {language}.",
            f"People in {country} speak {language}.",
        )
    return (
        f"What currency does {country} use?",
        f"{country} uses the {currency}.",
        f"The currency of {country} is the {currency}.",
    )


def _arithmetic(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    if rng.random() < 0.5:
        return (f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.", f"The sum is {a + b}.")
    big, small = max(a, b), min(a, b)
    return (
        f"What is {big} minus {small}?",
        f"{big} minus {small} is {big - small}.",
        f"The difference is {big - small}.",
    )


def _spelling(rng: random.Random) -> tuple[str, str, str]:
    word = rng.choice(WORDS)
    letters = "-".join(word.upper())
    return (f"How do you spell {word}?", f"{word} is spelled {letters}.", f"{letters}.")


def _story(rng: random.Random) -> tuple[str, str, str]:
    adjective, word = rng.choice(ADJECTIVES), rng.choice(WORDS)
    return (
        f"Write one sentence about a {adjective} {word}.",
        f"Once there was a {adjective} {word}, and everyone who saw the {word} remembered it.",
        f"A {adjective} {word} was remembered by all.",
    )


def _listing(rng: random.Random) -> tuple[str, str, str]:
    picks = rng.sample(WORDS, 3)
    return (
        f"Name three things you might find near a {picks[0]}.",
        f"Here are three words: 1. {picks[0]} 2. {picks[1]} 3. {picks[2]}.",
        f"{picks[0]}, {picks[1]} and {picks[2]}.",
    )


GENERATORS = (_capital, _arithmetic, _spelling, _story, _listing)


def prompt_id_of(prompt: str) -> str:
    # ultrachat's prompt_id is a sha256 hex digest of the prompt
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()


def _row(rng: random.Random, index: int, split: str) -> dict:
    question, answer, short = rng.choice(GENERATORS)(rng)
    prompt = question if index % 7 else f"{question} ({split} #{index})"
    messages = [{"content": question, "role": "user"}, {"content": answer, "role": "assistant"}]
    if rng.random() < 0.4:
        messages += [{"content": rng.choice(FOLLOW_UPS), "role": "user"}, {"content": short, "role": "assistant"}]
    if rng.random() < 0.1:
        messages.insert(0, {"content": "You are a helpful assistant.", "role": "system"})
    return {"prompt": prompt, "prompt_id": prompt_id_of(f"{split}:{index}:{prompt}"), "messages": messages}


def _malformed(rng: random.Random, index: int, split: str) -> dict:
    kind = index % 4
    row = _row(rng, index, split)
    if kind == 0:
        row["messages"] = []
    elif kind == 1:
        row["messages"][0]["role"] = "tool"
    elif kind == 2:
        row["messages"][-1]["content"] = ""
    else:
        row["messages"] = None
    return row


def generate_split(split: str, train_rows: int, seed: int = 0) -> Iterator[dict]:
    """Rows of one split; the same (split, train_rows, seed) always yields the same rows."""
    rng = random.Random(f"tunegate-synthetic:{seed}:{split}")
    count = max(10, int(train_rows * SPLIT_SIZES[split]))
    for index in range(count):
        # one row in 97 is broken, like the odd bad record of a real dump
        yield _malformed(rng, index, split) if index % 97 == 96 else _row(rng, index, split)
