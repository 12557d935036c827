"""A person approves in the real Prefect UI: headless Chromium opens the paused run, fills Resume, submits."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.prefect_server import manual_run_command
from workspaces.local.workspace import LocalWorkspace

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install -y chromium); .ci/run installs it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


def choose(page, dialog, option: str) -> None:
    """Pick `option` in the form's decision field (Prefect's schema form renders a Literal as a p-select, whose
    list opens from the keyboard once the control has focus)."""
    dialog.locator("button.p-select-button__control").first.click()
    page.keyboard.press("ArrowDown")
    page.get_by_role("option", name=option, exact=True).click()


def test_approve_in_the_prefect_ui_then_the_run_deploys(prefect_server, browser, tmp_path):
    OUTPUT.mkdir(exist_ok=True)
    summary_path = tmp_path / "summary.json"
    process = subprocess.Popen(
        manual_run_command(tmp_path),
        env=prefect_server.env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    paused = prefect_server.wait_for_state("PAUSED", process=process)

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{prefect_server.url}/runs/flow-run/{paused['id']}")
    page.get_by_role("button", name="Resume").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Approve tiny-phi3-chat-ultrachat-200k").wait_for()  # the short summary is in the form
    text = dialog.inner_text()
    assert "eval_loss" in text and "/artifacts/artifact/" in text  # the full review is linked, not inlined
    fields = dialog.locator("textarea")
    fields.nth(0).fill("dana")
    fields.nth(1).fill("approved in the UI")
    page.screenshot(path=str(OUTPUT / "approval-form-unchosen.png"))
    # name and comment filled in, no decision chosen: the form refuses, and the run keeps waiting
    dialog.get_by_role("button", name="Submit").click()
    page.wait_for_timeout(2000)
    assert page.get_by_role("dialog").count() == 1
    assert prefect_server.wait_for_state("PAUSED", flow_run_id=paused["id"], timeout_s=5)
    page.screenshot(path=str(OUTPUT / "approval-form-refused.png"))
    choose(page, dialog, "approve")
    page.screenshot(path=str(OUTPUT / "approval-form.png"))
    dialog.get_by_role("button", name="Submit").click()

    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]
    summary = json.loads(summary_path.read_text())
    assert summary["approval"] == {"decision": "approved", "approver": "dana", "comment": "approved in the UI"}
    assert summary["smoke"]["ok"] is True and summary["endpoint"]["deployment"]
    assert summary["teardown"]["done"] and LocalWorkspace(tmp_path / "workspace").inventory().empty
    assert (OUTPUT / "approval-form.png").stat().st_size > 10_000
