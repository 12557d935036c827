"""Prompt flow, the adapter: the chat flow in promptflows/chat run against a tunegate endpoint.

The endpoint's scoring URL and key live in a Prompt flow connection (a CustomConnection, the key a secret that
Prompt flow encrypts in its own store under ~/.promptflow), never in a file of the flow. `tunegate promptflow` points
the connection the flow names, `tunegate_endpoint`, at one endpoint; the smoke step's batch run makes a connection of
its own for the endpoint it checks and deletes it afterwards.

Prompt flow is an optional extra (`pip install -e ".[promptflow]"`): it is imported here, lazily, and nowhere else.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

from workspaces.errors import WorkspaceError
from workspaces.ports import ChatBatch, ChatBatchRow
from workspaces.scoring import Credentials, ScoringParameters

CONNECTION = "tunegate_endpoint"  # the connection promptflows/chat/flow.dag.yaml names
INSTALL_HINT = 'Prompt flow is not installed: pip install -e ".[promptflow]"'


class PromptflowError(WorkspaceError):
    """Prompt flow is missing, or refused or failed what it was asked; the message says which and what to do."""


def chat_flow_dir() -> Path:
    return Path(str(importlib.resources.files("promptflows") / "chat"))


def require_promptflow() -> None:
    """Fail early, naming the install command, when the extra is not installed."""
    try:
        import promptflow.client  # noqa: F401
    except ImportError as exc:
        raise PromptflowError(f"{INSTALL_HINT} ({exc})") from None


class _NoSecretsAdvice(logging.Filter):
    """Prompt flow warns "Please use connection.secrets[key] to access secrets." when its own code reads a secret of
    a CustomConnection as an attribute; the user can do nothing about it: kept out of their terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Please use connection.secrets[", "Please use connection.configs["))


def quiet_promptflow() -> None:
    """Prompt flow as tunegate runs it, in this process: no telemetry (it posts to Application Insights on every
    call; this machine may have no internet, and the user did not ask for it), no advice about our connection."""
    from promptflow._sdk._configuration import Configuration

    Configuration.get_instance().config.setdefault("telemetry", {})["enabled"] = False
    logging.getLogger("promptflow.core._connection").addFilter(_NoSecretsAdvice())


def _client():
    require_promptflow()
    from promptflow._sdk._configuration import Configuration
    from promptflow.client import PFClient

    quiet_promptflow()
    # no trace collection: it starts Prompt flow's service (port 23333) as a daemon that outlives tunegate's command
    # and its flow run. `pf flow test` / `pf flow serve` run by hand keep whatever the user configured.
    Configuration.get_instance().config.setdefault("trace", {})["destination"] = "none"
    return PFClient()


def save_connection(
    name: str,
    endpoint: str,
    credentials: Credentials,
    workspace_kind: str,
    deployment: str | None = None,
    parameters: ScoringParameters | None = None,
) -> None:
    """Create or update the connection `name` for `endpoint`: its URL (and a deployment and generation settings, when
    given) as configs, its key as a secret."""
    from promptflow.entities import CustomConnection

    configs = {"endpoint": credentials.scoring_uri, "endpoint_name": endpoint, "workspace": workspace_kind}
    if deployment:
        configs["deployment"] = deployment
    if parameters is not None:
        configs |= {name: json.dumps(value) for name, value in parameters.model_dump().items()}  # configs are strings
    connection = CustomConnection(name=name, configs=configs, secrets={"api_key": credentials.key.get_secret_value()})
    client = _client()
    try:
        client.connections.create_or_update(connection)
    except Exception as exc:  # noqa: BLE001 - a keyring or store problem: say what Prompt flow said
        raise PromptflowError(f"could not save Prompt flow connection {name}: {type(exc).__name__}: {exc}") from None


def delete_connection(name: str) -> None:
    client = _client()
    with contextlib.suppress(Exception):  # gone already is what was wanted
        client.connections.delete(name)


def connection_endpoint(name: str = CONNECTION) -> str | None:
    """The endpoint a connection points at (None: no such connection); never its key."""
    client = _client()
    try:
        connection = client.connections.get(name)
    except Exception:  # noqa: BLE001 - not found (Prompt flow raises its own ConnectionNotFoundError)
        return None
    return connection.configs.get("endpoint_name")


def ask(question: str) -> str:
    """One turn through the chat flow, as `pf flow test --flow promptflows/chat --inputs question=...` runs it, with
    whatever the connection `tunegate_endpoint` says (endpoint, deployment, generation settings)."""
    inputs = {"question": question, "chat_history": []}
    client = _client()
    try:
        outputs = client.test(flow=chat_flow_dir(), inputs=inputs)
    except Exception as exc:  # noqa: BLE001 - the flow's own error (an HTTP answer, a refused connection)
        raise PromptflowError(f"the chat flow failed: {_first_line(exc)}") from None
    return str(outputs["answer"])


def pf_executable() -> str:
    """The `pf` of this environment (the one Prompt flow was installed into with tunegate)."""
    beside = Path(sys.executable).parent / "pf"
    found = str(beside) if beside.exists() else shutil.which("pf")
    if found is None:
        raise PromptflowError(INSTALL_HINT + " (no `pf` command)")
    return found


def _pf() -> list[str]:
    """`pf`, as tunegate starts it: Prompt flow's own CLI in a process made quiet first (quiet_promptflow)."""
    pf_executable()  # installed, or the install command
    return [sys.executable, "-m", "workspaces.promptflow", "pf"]


def serve_command(port: int, host: str, open_browser: bool) -> list[str]:
    command = [*_pf(), "flow", "serve", "--source", str(chat_flow_dir()), "--port", str(port)]
    command += ["--host", host]
    return command if open_browser else [*command, "--skip-open-browser"]


def interactive_command() -> list[str]:
    return [*_pf(), "flow", "test", "--flow", str(chat_flow_dir()), "--interactive"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _run_name(endpoint: str, deployment: str | None) -> str:
    # Prompt flow's run names: letters, digits, '_' and '-'; unique per call
    stem = re.sub(r"[^A-Za-z0-9_-]", "_", f"tunegate_{endpoint}_{deployment or 'live'}")
    return f"{stem}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:8]}"


class PromptflowChat:
    """The smoke step's batch run: `pf run` of the chat flow over a few prompts, one answer (or error) per prompt."""

    def check(self) -> None:
        require_promptflow()

    def batch(
        self,
        endpoint: str,
        credentials: Credentials,
        deployment: str | None,
        questions: list[str],
        parameters: ScoringParameters,
        workspace_kind: str,
    ) -> ChatBatch:
        name = _run_name(endpoint, deployment)
        # a connection of its own: two runs at once never point each other's batch elsewhere
        connection = f"tunegate_smoke_{re.sub(r'[^A-Za-z0-9_]', '_', endpoint)}_{uuid.uuid4().hex[:8]}"
        save_connection(connection, endpoint, credentials, workspace_kind, deployment, parameters)
        try:
            with tempfile.TemporaryDirectory(prefix="tunegate-pf-") as tmp:
                data = Path(tmp) / "questions.jsonl"  # the prompts only: no URL, no key
                data.write_text("".join(json.dumps({"question": q}) + "\n" for q in questions), encoding="utf-8")
                return self._run(name, connection, data)
        finally:
            delete_connection(connection)

    def _run(self, name: str, connection: str, data: Path) -> ChatBatch:
        client = _client()
        try:
            run = client.run(
                flow=chat_flow_dir(),
                data=str(data),
                name=name,
                column_mapping={"question": "${data.question}"},
                connections={"chat": {"connection": connection}},
                stream=False,
            )
            details = client.get_details(run, all_results=True)
        except Exception as exc:  # noqa: BLE001 - the batch run itself could not run
            raise PromptflowError(f"Prompt flow batch run {name} failed: {_first_line(exc)}") from None
        questions = [json.loads(line)["question"] for line in data.read_text(encoding="utf-8").splitlines()]
        answers = dict(zip(details["inputs.line_number"], details.get("outputs.answer", []), strict=False))
        outputs_at = _output_path(run)
        errors = line_errors(Path(outputs_at)) if outputs_at else {}
        rows = []
        for line, question in enumerate(questions):
            answer = answers.get(line)
            if isinstance(answer, str):
                rows.append(ChatBatchRow(question=question, answer=answer))
            else:
                why = errors.get(line, "no answer: see the run's logs")
                rows.append(ChatBatchRow(question=question, error=why))
        return ChatBatch(run=run.name, status=str(run.status), rows=rows, outputs_at=outputs_at)


def _output_path(run) -> str | None:
    path = (getattr(run, "properties", None) or {}).get("output_path")
    return str(path) if path else None


def line_errors(outputs_at: Path) -> dict[int, str]:
    """Why each failed line of a batch run failed, from the run's flow_artifacts (one JSON object per line:
    `{"line_number", "run_info": {"status", "error": {"message", "additionalInfo": [{"info": {"message"}}]}}}`);
    the tool's own message where there is one, else Prompt flow's."""
    errors: dict[int, str] = {}
    for path in sorted((outputs_at / "flow_artifacts").glob("*.jsonl")):
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(text)
                info = record["run_info"]
            except (ValueError, KeyError, TypeError):
                continue
            if info.get("status") != "Failed" or not isinstance(info.get("error"), dict):
                continue
            error = info["error"]
            tool = [item.get("info", {}).get("message") for item in error.get("additionalInfo") or []]
            errors[int(record["line_number"])] = next((m for m in tool if m), None) or str(error.get("message"))
    return errors


if __name__ == "__main__" and sys.argv[1:2] == ["pf"]:  # `pf ...` as tunegate starts it (serve_command)
    quiet_promptflow()
    from promptflow._cli.pf import main

    sys.argv = ["pf", *sys.argv[2:]]
    main()
