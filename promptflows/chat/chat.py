"""The chat flow's one node: the conversation so far plus the question, sent through tunegate's scoring client.

The E2E guide's tool posts `{"input_data": [text], "params": {...}}` with a key from its config.py; this one speaks
the notebook's contract (`input_data.input_string` + `parameters` -> `{"output": ...}`), which every tunegate
endpoint answers, local or Azure, and takes the URL and key from a Prompt flow connection.
"""

# no `from __future__ import annotations`: Prompt flow reads the annotations to find the connection input
from promptflow.connections import CustomConnection
from promptflow.core import tool

from workspaces.errors import TransientWorkspaceError
from workspaces.promptflow import quiet_promptflow
from workspaces.scoring import Credentials, ScoringParameters, ScoringRequest, score

quiet_promptflow()  # in whichever process Prompt flow runs this node: `pf flow serve`, a batch run's worker


def conversation(question: str, chat_history: list[dict]) -> list[dict[str, str]]:
    """Prompt flow's chat history (`[{"inputs": {"question"}, "outputs": {"answer"}}, ...]`) as chat messages."""
    messages: list[dict[str, str]] = []
    for turn in chat_history or []:
        asked = (turn.get("inputs") or {}).get("question")
        answered = (turn.get("outputs") or {}).get("answer")
        if asked:
            messages.append({"role": "user", "content": str(asked)})
        if answered:
            messages.append({"role": "assistant", "content": str(answered)})
    messages.append({"role": "user", "content": question})
    return messages


def settings(configs: dict, max_new_tokens: int, temperature: float) -> ScoringParameters:
    """The node's generation settings, overridden by the connection's (configs are strings) where it has them."""
    given = {name: configs[name] for name in ScoringParameters.model_fields if configs.get(name)}
    return ScoringParameters.model_validate({"max_new_tokens": max_new_tokens, "temperature": temperature, **given})


@tool
def chat(
    connection: CustomConnection,
    question: str,
    chat_history: list,
    max_new_tokens: int = 200,
    temperature: float = 0.6,
) -> str:
    if not question or not question.strip():
        raise ValueError("question is empty: type something to ask the model")
    configs = dict(connection.configs)
    credentials = Credentials(scoring_uri=configs["endpoint"], key=connection.secrets["api_key"])
    request = ScoringRequest(
        messages=conversation(question, chat_history), parameters=settings(configs, max_new_tokens, temperature)
    )
    try:
        result = score(credentials, request, deployment=configs.get("deployment") or None)
    except TransientWorkspaceError as exc:
        raise RuntimeError(f"{exc}; is the endpoint running? `tunegate endpoint start <name>`") from None
    if result.error:
        raise RuntimeError(f"the endpoint answered {result.error}")
    return result.output or ""
