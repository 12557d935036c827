"""The rollout against a real local endpoint server: `/metrics` in the Prometheus text format, a mirror that copies
live traffic without ever failing it, and the rollout's window judging a candidate the test makes faulty or slow on
purpose (its chat template fails on some inputs, or spends a second on each): rolled back at its first step, the
live model back to 100%.

The candidates are real model folders (the live model's, with its chat template changed) added through the
server's admin API; nothing of tunegate is patched."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tasks.evaluation import EvalPrompt
from tasks.rollout import watch_window
from tasks.rollout_settings import RolloutSettings
from tasks.rollout_traffic import restore_live, shift_traffic
from workspaces.local.workspace import LocalWorkspace
from workspaces.ports import ConflictError, ModelVersion, ScoringParameters, ScoringRequest, WorkspaceError

pytestmark = pytest.mark.slow
ENDPOINT = "ep-rollout"
PARAMS = ScoringParameters(max_new_tokens=16, do_sample=False)
# the live model is the untrained foundation: its answers are noise (max_degenerate_rate=1 below), not what is tested
PROMPTS = [EvalPrompt(prompt=f"What is {n} plus {n}?", reference=f"It is {2 * n}.") for n in range(8)]
# a model that breaks on some real-world inputs the held-out data does not have
FAILS_ON_BOOM = "{% if 'BOOM' in messages[-1]['content'] %}{{ raise_exception('cannot answer that') }}{% endif %}"
SLOW = "{% for j in range(40) %}{% for i in range(100000) %}{% endfor %}{% endfor %}"  # ~1 s a request


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    ws = LocalWorkspace(tmp_path_factory.mktemp("rollout") / "workspace")
    foundation = ws.registry.get_foundation_model("tiny-phi3-chat")
    ws.endpoints.ensure(ENDPOINT)
    ws.endpoints.create_deployment(
        ENDPOINT, "live", ModelVersion(name=foundation.name, version=foundation.version), "local-cpu"
    )
    ws.endpoints.set_traffic(ENDPOINT, {"live": 100})
    yield ws
    ws.endpoints.delete(ENDPOINT)
    assert ws.inventory().empty


def admin(workspace) -> tuple[str, dict]:
    port = json.loads((workspace.root / "endpoints" / ENDPOINT / "server.json").read_text())["port"]
    token = json.loads((workspace.root / "endpoints" / ENDPOINT / "secrets.json").read_text())["admin"]
    return f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {token}"}


def add_variant(workspace, name: str, template_prefix: str) -> None:
    """The live model's folder with `template_prefix` put before its chat template, deployed as `name` at 0%."""
    folder = workspace.root / "variants" / name
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(workspace.root / "endpoints" / ENDPOINT / "models" / "live", folder)
    template = folder / "artifacts" / "hf_model" / "chat_template.jinja"
    template.write_text(template_prefix + template.read_text())
    base, headers = admin(workspace)
    payload = {"model_dir": str(folder), "model": f"tiny-phi3-chat:{name}", "instance_type": "local-cpu"}
    response = httpx.post(f"{base}/admin/deployments/{name}", json=payload, headers=headers, timeout=180)
    assert response.status_code == 200, response.text


def ask(workspace, content: str, deployment: str | None = None):
    request = ScoringRequest(messages=[{"role": "user", "content": content}], parameters=PARAMS)
    return workspace.endpoints.invoke(ENDPOINT, request, deployment=deployment, timeout_s=60)


def test_metrics_answer_in_the_prometheus_format_with_a_key_only(workspace):
    assert ask(workspace, "hi").status_code == 200
    base, admin_headers = admin(workspace)
    assert httpx.get(f"{base}/metrics").status_code == 401
    key = workspace.endpoints.credentials(ENDPOINT).key.get_secret_value()
    for headers in ({"Authorization": f"Bearer {key}"}, admin_headers):
        scraped = httpx.get(f"{base}/metrics", headers=headers)
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain; version=")
    families = {family.name: family for family in text_string_to_metric_families(scraped.text)}
    served = [s for s in families["tunegate_requests"].samples if s.name == "tunegate_requests_total"]
    assert any(s.labels == {"deployment": "live", "code": "200", "kind": "split"} and s.value >= 1 for s in served)
    buckets = [s for s in families["tunegate_request_duration_seconds"].samples if s.name.endswith("_bucket")]
    assert {s.labels["le"] for s in buckets} >= {"0.1", "1.0", "+Inf"}
    assert key not in scraped.text


def test_a_mirror_copies_live_traffic_and_never_fails_the_live_answer(workspace):
    add_variant(workspace, "boom", FAILS_ON_BOOM)
    try:
        before = workspace.endpoints.traffic(ENDPOINT)
        workspace.endpoints.set_mirror(ENDPOINT, {"boom": 50})
        assert workspace.endpoints.get(ENDPOINT).mirror == {"boom": 50}
        answered = [ask(workspace, "BOOM: what is 2 plus 2?") for _ in range(30)]
        assert {a.status_code for a in answered} == {200} and {a.deployment for a in answered} == {"live"}
        deadline = time.monotonic() + 60  # the copies are answered in the background
        while (copies := workspace.endpoints.traffic(ENDPOINT, since=before).deployments.get("boom")) is None or (
            copies.requests < 5 and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        live = workspace.endpoints.traffic(ENDPOINT, since=before).deployments["live"]
        assert live.requests == 30 and live.errors == 0
        # every copy failed (the candidate cannot answer BOOM), none of it reached the clients
        assert copies.requests >= 5 and copies.errors == copies.requests == copies.mirrored
        with pytest.raises(ConflictError, match="mirror live traffic"):
            workspace.endpoints.set_traffic(ENDPOINT, {"live": 50, "boom": 50})
        with pytest.raises(WorkspaceError, match="1..50%"):
            workspace.endpoints.set_mirror(ENDPOINT, {"boom": 60})
    finally:
        workspace.endpoints.set_mirror(ENDPOINT, {})
        workspace.endpoints.delete_deployment(ENDPOINT, "boom")


class Load:
    """Users of the endpoint: requests through the traffic split, ~10 a second, some of which the candidate cannot
    answer."""

    def __init__(self, workspace, content: str) -> None:
        self.workspace, self.content = workspace, content
        self.statuses: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            result = ask(self.workspace, self.content)
            self.statuses.setdefault(result.deployment or "?", []).append(result.status_code)
            self._stop.wait(0.1)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_a_candidate_that_errors_under_live_traffic_is_rolled_back_at_its_first_step(workspace):
    add_variant(workspace, "boom", FAILS_ON_BOOM)
    endpoints, settings = (
        workspace.endpoints,
        RolloutSettings(window_s=6, probe_rate=4, min_requests=3, max_degenerate_rate=1),
    )
    assert shift_traffic.fn(endpoints, ENDPOINT, "live", "boom", 25) == {"live": 75, "boom": 25}
    with Load(workspace, "BOOM: tell me a story") as users:
        report = watch_window.fn(
            endpoints, ENDPOINT, {"candidate": "boom", "live": "live"}, settings, PROMPTS, PARAMS, "step", 25
        )
    # the probes (held-out prompts) were all answered: only live traffic shows the fault
    assert report.verdict == "rolled back" and "candidate error rate" in report.failures[0], report
    assert report.errors["candidate"] >= 1 and report.errors["live"] == 0 and report.probes["candidate"] >= 3
    assert set(users.statuses.get("boom", [])) <= {500} and set(users.statuses["live"]) == {200}
    assert restore_live.fn(endpoints, ENDPOINT, "live", "boom") == {"live": 100}
    assert endpoints.get(ENDPOINT).deployments == ("live",)


def test_a_slow_candidate_is_rolled_back_on_the_probes_of_a_quiet_endpoint(workspace):
    add_variant(workspace, "slow", SLOW)
    endpoints, settings = (
        workspace.endpoints,
        RolloutSettings(window_s=15, probe_rate=4, min_requests=3, max_degenerate_rate=1),
    )
    shift_traffic.fn(endpoints, ENDPOINT, "live", "slow", 25)
    report = watch_window.fn(
        endpoints, ENDPOINT, {"candidate": "slow", "live": "live"}, settings, PROMPTS, PARAMS, "step", 25
    )
    restore_live.fn(endpoints, ENDPOINT, "live", "slow")
    assert report.verdict == "rolled back" and report.p95_basis == "probes", report
    assert "p95 latency" in report.failures[0] and report.p95_ms["candidate"] > 1000 > report.p95_ms["live"]
    assert endpoints.get(ENDPOINT).traffic == {"live": 100}
