"""Endpoints: `chat`, `promptflow`, `endpoint start`, `teardown`."""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from workspaces.ports import WorkspaceError

if TYPE_CHECKING:
    from workspaces.scoring import ScoringParameters

from flows.cli.common import (
    ProfileOption,
    SetOption,
    _fail,
    _require_live,
    _workspace,
    app,
    console,
    err,
    exit_code,
)

EMPTY_ANSWER = "(an empty answer: the model ended its turn at once)"  # said, not a blank line
CHAT_HELP = "/help this help, /reset start a new conversation, /quit leave (or Ctrl-D)"


def chat_parameters(max_new_tokens: int, temperature: float, greedy: bool = False) -> ScoringParameters:
    """The generation settings of `chat`: temperature 0 (or --greedy) is greedy decoding; a bad value exits 2
    naming the option."""
    from pydantic import ValidationError

    from workspaces.scoring import ScoringParameters

    sample = not greedy and temperature != 0  # a negative one is refused below, not read as greedy
    try:
        return ScoringParameters(
            max_new_tokens=max_new_tokens, do_sample=sample, **({"temperature": temperature} if sample else {})
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        option = "--" + str(problem["loc"][0]).replace("_", "-")
        _fail(ValueError(f"{option}: {problem['msg']}"), 2)


def say_streamed(pieces: Iterator[str]) -> str | None:
    """Print the answer as it comes, after "model> ", then its time; None (the error said in one line) when it
    failed, the part already printed ended with "[cut off]"."""
    started = time.perf_counter()
    answer, shown = "", False
    try:
        for piece in pieces:
            answer += piece
            if not shown:  # "model> " once there is text to show (leading whitespace is not)
                if not answer.strip():
                    continue
                console.print(Text("model> ", "bold cyan"), end="")
                piece, shown = answer.lstrip(), True
            console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
    except WorkspaceError as exc:  # an HTTP error, or the server went away meanwhile: one line
        if shown:
            console.print(Text("  [cut off]", "dim"))
        err.print(str(exc).splitlines()[0], style="red", markup=False)
        return None
    if not shown:
        console.print(Text.assemble(("model> ", "bold cyan"), (EMPTY_ANSWER, "dim")), end="")
    console.print(Text(f"  ({(time.perf_counter() - started) * 1000:.0f} ms)", "dim"))
    return answer.strip()


@app.command()
def chat(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint name in the profile's workspace.")],
    deployment: Annotated[
        str | None, typer.Option(help="Target one deployment (header azureml-model-deployment).")
    ] = None,
    message: Annotated[
        list[str] | None, typer.Option("--message", "-m", help="Send these and exit (no prompt).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most per answer.")] = 64,
    temperature: Annotated[float, typer.Option(min=0, help="Sampling temperature; 0 decodes greedily.")] = 0.6,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always the most likely token (no sampling).")] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Talk to a live endpoint: each turn is sent with the conversation so far (the seed's 'chat with your model')."""
    from workspaces.ports import ScoringRequest

    workspace = _workspace(profile, set_)
    _require_live(workspace, endpoint)
    failed = False
    parameters = chat_parameters(max_new_tokens, temperature, greedy)
    history: list[dict[str, str]] = []
    turns = iter(message) if message else None
    if turns is None:
        target = f"{endpoint}/{deployment}" if deployment else endpoint
        console.print(f"chatting with {target}: {CHAT_HELP}", markup=False, style="dim", soft_wrap=True)
    while True:
        try:
            text = next(turns) if turns else console.input("[bold]you> [/bold]")
        except (StopIteration, EOFError, KeyboardInterrupt):
            break
        command = text.strip().lower()
        if not command or command in {"/quit", "/exit"}:
            if turns:
                continue
            break
        if command == "/help":
            console.print(CHAT_HELP, markup=False, style="dim")
            continue
        if command == "/reset":
            history.clear()
            console.print("(a new conversation)", markup=False, style="dim")
            continue
        history.append({"role": "user", "content": text})
        answer = say_streamed(
            workspace.endpoints.stream(endpoint, ScoringRequest(messages=history, parameters=parameters), deployment)
        )
        if answer is None:
            failed = True
            history.pop()
            continue
        history.append({"role": "assistant", "content": answer})
    if failed:  # a failed answer makes a failed command, scripted or not
        raise typer.Exit(1)


@app.command()
def promptflow(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint name in the profile's workspace.")],
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve the chat flow with its chat page (pf flow serve) until Ctrl-C.")
    ] = False,
    interactive: Annotated[
        bool, typer.Option("--interactive", help="Chat in this terminal (pf flow test --interactive).")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of --serve.")] = 8080,
    host: Annotated[str, typer.Option(help="Address --serve listens on.")] = "localhost",
    open_browser: Annotated[bool, typer.Option("--open-browser", help="Open the chat page (--serve).")] = False,
    question: Annotated[
        str, typer.Option("--question", "-q", help="What to ask when neither --serve nor --interactive is given.")
    ] = "What can you help me with?",
    deployment: Annotated[
        str | None, typer.Option(help="Target one deployment (header azureml-model-deployment), also at 0% traffic.")
    ] = None,
    max_new_tokens: int = 200,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 decodes greedily.")] = 0.6,
    greedy: Annotated[bool, typer.Option("--greedy", help="Always the most likely token (no sampling).")] = False,
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Chat with a live endpoint through Prompt flow (the flow in promptflows/chat, as the E2E guide's Scenario 3).

    Points the Prompt flow connection `tunegate_endpoint` at the endpoint (its key kept as a secret of the
    connection, in Prompt flow's own encrypted store), then asks one question (pf flow test), chats in the terminal
    (--interactive) or serves the flow with its chat page (--serve)."""
    import os

    from workspaces import promptflow as pf

    if serve and interactive:
        _fail("choose one of --serve and --interactive", 2)
    parameters = chat_parameters(max_new_tokens, temperature, greedy)
    try:
        pf.require_promptflow()
    except WorkspaceError as exc:
        _fail(exc, 2)
    workspace = _workspace(profile, set_)
    _require_live(workspace, endpoint)
    try:
        credentials = workspace.endpoints.credentials(endpoint)
        pf.save_connection(pf.CONNECTION, endpoint, credentials, workspace.kind, deployment, parameters)
    except WorkspaceError as exc:
        _fail(exc, 1)
    target = f"{endpoint}/{deployment}" if deployment else endpoint
    console.print(
        f"Prompt flow connection {pf.CONNECTION} -> {target} ({credentials.scoring_uri})",
        markup=False,
        soft_wrap=True,
    )
    if serve or interactive:
        command = pf.serve_command(port, host, open_browser) if serve else pf.interactive_command()
        if serve:
            console.print(f"chat page: http://{host}:{port}/  (Ctrl-C stops it)", markup=False, soft_wrap=True)
        console.print("+ " + " ".join(command), markup=False, style="dim", soft_wrap=True)
        os.execv(command[0], command)  # pf takes over the terminal and Ctrl-C
    try:
        answer = pf.ask(question)
    except WorkspaceError as exc:
        _fail(exc, 1)
    console.print(Text.assemble(("you> ", "bold"), question), soft_wrap=True)
    console.print(Text.assemble(("model> ", "bold cyan"), answer), soft_wrap=True)


endpoint_app = typer.Typer(help="Manage an endpoint of the workspace.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")


@endpoint_app.command("start")
def endpoint_start(
    name: Annotated[str, typer.Argument(help="Endpoint name (`tunegate inventory` lists them).")],
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Start an endpoint whose server is down again, with its deployments and traffic as they were."""
    workspace = _workspace(profile, set_)
    try:
        found = workspace.endpoints.get(name)
        if found is None:
            _fail(f"no endpoint {name!r} in this workspace; `tunegate inventory` lists them", 2)
        if found.running:
            console.print(f"endpoint {name} is running", markup=False)
        else:
            started = workspace.endpoints.ensure(name)
            console.print(f"started endpoint {name}: traffic {started.traffic or 'none'}", markup=False)
        repaired = _reconcile(workspace, name)
    except WorkspaceError as exc:
        _fail(exc, exit_code(exc))
    if repaired:
        console.print(f"repaired: {repaired}", markup=False, soft_wrap=True)


@endpoint_app.command("openai")
def endpoint_openai(
    name: Annotated[str, typer.Argument(help="Endpoint name (`tunegate inventory` lists them).")],
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Print the endpoint's OpenAI base URL and key as OPENAI_BASE_URL / OPENAI_API_KEY (eval "$(...)"), which
    the openai SDK, LangChain and other OpenAI clients read. The key is a secret: this is the one command that
    shows it."""
    workspace = _workspace(profile, set_)
    _require_live(workspace, name)
    try:
        credentials = workspace.endpoints.credentials(name)
    except WorkspaceError as exc:
        _fail(exc, exit_code(exc))
    if credentials.openai_base_url is None:
        _fail(f"endpoint {name} ({workspace.kind}) answers only the scoring contract, not OpenAI's API", 2)
    typer.echo(f"export OPENAI_BASE_URL={shlex.quote(credentials.openai_base_url)}")
    typer.echo(f"export OPENAI_API_KEY={shlex.quote(credentials.key.get_secret_value())}")
    err.print(
        f'# model="{name}": its traffic split; a deployment\'s name: that one. The key is a secret: keep it out of '
        "logs and shared shells.",
        markup=False,
        soft_wrap=True,
        style="dim",
    )


def _reconcile(workspace, name: str) -> str | None:
    """Live model and champion of a kept endpoint made to agree (tasks/deploy.reconcile); what was done."""
    from tasks.promote import reconcile, serving_state

    serving = serving_state(workspace.endpoints, name)
    if serving is None or not serving.live:
        return None
    with workspace.endpoints.lock(name):
        return reconcile(workspace.endpoints, workspace.registry, name, serving.live[0].rpartition(":")[0])


@app.command()
def teardown(
    endpoint: Annotated[str, typer.Option("--endpoint", "-e", help="Endpoint to delete, with all its deployments.")],
    profile: ProfileOption = None,
    set_: SetOption = None,
) -> None:
    """Delete an endpoint left behind (for example by a run that was killed)."""
    from tasks.teardown import take_down

    try:
        result = take_down(_workspace(profile, set_).endpoints, "ephemeral", endpoint)
    except WorkspaceError as exc:  # one line, no traceback: a bad name is the caller's (2), the rest the workspace's
        _fail(exc, exit_code(exc))
    if not result.deleted:
        err.print(f"no endpoint {endpoint!r}; nothing to delete", markup=False)
        return
    console.print(f"deleted endpoint {endpoint}", markup=False)
