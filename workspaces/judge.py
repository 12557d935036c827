"""A judge model behind any OpenAI-compatible chat completions API (Azure OpenAI's v1 API, OpenAI, a local vLLM or
llama.cpp server): asked which of two answers to a prompt is better. The evaluation asks it in both orders.

Its key comes from a Prefect Secret block and only ever goes into the request header.
"""

from __future__ import annotations

import re
from urllib.parse import urlparse

import httpx
from pydantic import SecretStr

from workspaces.errors import TransientWorkspaceError, WorkspaceError

INSTRUCTIONS = (
    "You compare two answers a chat assistant gave to the same user message. A reference reply shows what a good "
    "answer says. Judge helpfulness, correctness and fluency; an answer that is garbled, repeats itself, or speaks "
    "as the user is worse than any real reply. Answer with exactly one word: A, B, or TIE."
)
VERDICT = re.compile(r"\b(A|B|TIE)\b", re.IGNORECASE)
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504})


class OpenAIJudge:
    def __init__(
        self,
        base_url: str,
        model: str,
        key: SecretStr | None = None,
        timeout_s: float = 60,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        headers = {}
        if key is not None:  # Azure OpenAI takes its key as api-key; everyone else as a bearer token
            azure = (urlparse(base_url).hostname or "").endswith(".openai.azure.com")
            secret = key.get_secret_value()
            headers = {"api-key": secret} if azure else {"Authorization": f"Bearer {secret}"}
        self.client = httpx.Client(timeout=timeout_s, headers=headers, transport=transport)

    def __call__(self, prompt: str, reference: str, first: str, second: str) -> float:
        """1.0 when the judge prefers `first`, 0.0 for `second`, 0.5 for a tie."""
        body = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 5,
            "messages": [
                {"role": "system", "content": INSTRUCTIONS},
                {
                    "role": "user",
                    "content": f"User message:\n{prompt}\n\nReference reply:\n{reference}\n\n"
                    f"Answer A:\n{first}\n\nAnswer B:\n{second}\n\nWhich is better: A, B or TIE?",
                },
            ],
        }
        try:
            response = self.client.post(self.url, json=body)
        except httpx.TransportError as exc:
            raise TransientWorkspaceError(f"judge {self.url} did not answer: {type(exc).__name__}") from exc
        if response.status_code in RETRYABLE:
            raise TransientWorkspaceError(f"judge {self.url} answered HTTP {response.status_code}")
        if response.status_code != 200:
            raise WorkspaceError(f"judge {self.url} refused: HTTP {response.status_code}: {response.text[:200]}")
        try:
            said = response.json()["choices"][0]["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise WorkspaceError(
                f"judge {self.url} did not answer as a chat completion: {response.text[:200]}"
            ) from None
        found = VERDICT.search(said)
        if found is None:
            return 0.5  # no verdict is no preference
        return {"A": 1.0, "B": 0.0, "TIE": 0.5}[found.group(1).upper()]
