"""One reply generated token by token: transformers' `generate` runs in its own thread with a streamer that hands
each piece of decoded text to the event loop as it comes (the OpenAI-compatible route's `stream: true`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from workspaces.local.model import generation_inputs


class ReplyStream:
    """A reply to one conversation. Made in a worker thread (rendering and tokenizing the prompt is bounded but can
    take a while; PromptTooLong is raised here, before anything is sent), then `start`ed and read with `pieces` in
    the event loop. `close` stops the generation at the next token (the client left, or a stop text came)."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        conversation: list[dict[str, str]],
        parameters: dict[str, Any],
        *,
        loop: asyncio.AbstractEventLoop,
        max_prompt_tokens: int | None = None,
        max_time_s: float | None = None,
    ) -> None:
        self._stopped = threading.Event()
        self._inputs, self._kwargs = generation_inputs(
            model,
            tokenizer,
            [conversation],
            parameters,
            max_prompt_tokens=max_prompt_tokens,
            max_time_s=max_time_s,
            stop=self._stopped,
        )
        self._model, self._tokenizer, self._loop = model, tokenizer, loop
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.prompt_tokens = int(self._inputs["input_ids"].shape[1])
        self.max_new_tokens = int(self._kwargs["max_new_tokens"])
        self.completion_tokens = 0
        self.ended_by_model = False  # the model's own end token came (not the length limit, time or a stop)
        self.error: BaseException | None = None

    def start(self) -> None:
        threading.Thread(target=self._generate, name="tunegate-stream", daemon=True).start()

    def close(self) -> None:
        self._stopped.set()

    async def pieces(self) -> AsyncIterator[str]:
        """The text as it is generated; raises what generation raised, after the text that came before it."""
        while (piece := await self._queue.get()) is not None:
            yield piece
        if self.error is not None:
            raise self.error

    def _put(self, item: str | None) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _generate(self) -> None:
        import torch
        from transformers import TextStreamer

        stream = self

        class Pieces(TextStreamer):  # decoded text goes to the loop's queue; the end is put once counts are known
            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    stream._put(text)

        try:
            with torch.no_grad():
                output = self._model.generate(
                    **self._inputs,
                    **self._kwargs,
                    streamer=Pieces(self._tokenizer, skip_prompt=True, skip_special_tokens=True),
                )
            generated = output[0, self._inputs["input_ids"].shape[1] :].tolist()
            self.completion_tokens = len(generated)
            self.ended_by_model = bool(generated) and generated[-1] in set(self._kwargs["eos_token_id"])
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which answers with it
            self.error = exc
        finally:
            self._put(None)


class StopTexts:
    """OpenAI's `stop`: the reply ends before the first of these texts. Fed piece by piece, it holds back the end of
    a piece that may be the start of a stop text, so that no part of one is ever sent."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.held = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        """What of `piece` can be sent now ("" once a stop text came)."""
        if self.hit:
            return ""
        text = self.held + piece
        found = [text.find(stop) for stop in self.stops if stop in text]
        if found:
            self.hit, self.held = True, ""
            return text[: min(found)]
        hold = max(
            (size for stop in self.stops for size in range(1, len(stop)) if text.endswith(stop[:size])), default=0
        )
        self.held = text[len(text) - hold :] if hold else ""
        return text[: len(text) - hold]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return "" if self.hit else held
