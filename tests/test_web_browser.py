"""`flowsh serve`'s pages in a real headless Chromium (Debian's, driven by Playwright; no
browser download): a failed night from the browser, start to resume.

FLOWSH_UI_SCREENSHOTS=DIR also saves the screenshots there (docs/ for docs/ui.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.report_browser import CHROMIUM
from tests.web_helpers import FLOW, Server, serve

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None, "chromium is not installed (apt-get install -y chromium)"
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def night(home: Path, tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    flows = tmp_path / "flows"
    flows.mkdir()
    flag = tmp_path / "flag"
    (flows / "nightly.yaml").write_text(FLOW.format(flag=flag))
    with serve(home, "--workflows", str(flows)) as srv:
        yield srv, flag


def _shot(page: Page, tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    assert out.stat().st_size > 10_000  # a page, not a blank
    target = os.environ.get("FLOWSH_UI_SCREENSHOTS")
    if target:
        shutil.copy(out, Path(target) / name)


def test_a_failed_night_from_the_browser(browser: Browser, night: tuple[Server, Path],
                                         tmp_path: Path, home: Path) -> None:
    srv, flag = night
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    # Nothing may come from the network: only this server.
    requested: list[str] = []
    page.on("request", lambda req: requested.append(req.url))

    # The URL `flowsh serve` printed (with the token it made) logs the browser in: the
    # dashboard, the token gone from the address bar, kept in a cookie for what follows.
    page.goto(srv.printed)
    assert page.url == srv.url + "/"
    # The dashboard: start the workflow with a param.
    card = page.locator('section.wf[data-workflow="nightly"]')
    expect(card.locator(".pill")).to_have_text("never run")
    card.locator('input[name="param:WHO"]').fill("ana")
    card.get_by_role("button", name="Start run").click()
    page.wait_for_url("**/runs/*")
    # From here on the page must never reload: a mark on the window would be lost.
    page.evaluate("window.__sameDocument = true")

    # The steps turn green live, then `load` fails: the DAG and the list follow the run.
    fetch = page.locator('#dag g.dag-node[data-step="fetch"]')
    expect(fetch).to_have_class("dag-node st-running", timeout=15_000)
    expect(fetch).to_have_class("dag-node st-succeeded", timeout=15_000)
    expect(page.locator('#dag g.dag-node[data-step="load"]')).to_have_class(
        "dag-node st-failed", timeout=15_000)
    expect(page.locator("#run-status")).to_have_text("failed")
    expect(page.locator('#dag g.dag-node[data-step="publish"]')).to_have_class(
        "dag-node st-skipped")
    expect(page.locator('#timeline g.gantt-row[data-step="load"] rect.gantt-bar')).to_have_count(1)

    # The failed step's log: open it and read why.
    load = page.locator("details#step-load")
    if not load.evaluate("el => el.open"):
        load.locator("summary").click()
    expect(load.locator("pre.logtext")).to_contain_text("no flag file", timeout=10_000)
    expect(load.locator("pre.logtext")).to_contain_text("loading")
    fetch_log = page.locator("details#step-fetch")
    fetch_log.locator("summary").click()
    expect(fetch_log.locator("pre.logtext")).to_contain_text("fetching for ana")
    _shot(page, tmp_path, "ui-run-failed.png")

    # Fix the cause, press Resume, and watch the run succeed on the same page.
    flag.write_text("")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=20_000)
    for step in ("fetch", "load", "publish"):
        expect(page.locator(f'#dag g.dag-node[data-step="{step}"]')).to_have_class(
            "dag-node st-succeeded")
    expect(page.locator("#action-error")).to_be_hidden()
    # The open log goes on with the new attempt (appended to the log), nothing twice.
    expect(load.locator("pre.logtext")).to_contain_text("loaded", timeout=10_000)
    assert load.locator("pre.logtext").text_content().count("no flag file") == 1
    assert page.evaluate("window.__sameDocument") is True
    _shot(page, tmp_path, "ui-run.png")

    # Retry one step and what follows, from its log's button: it runs again, live.
    # (load: failed, then resumed = 2 attempts; the retry is its third.)
    load_node = page.locator('#dag g.dag-node[data-step="load"] text.meta')
    expect(load_node).to_contain_text("\u00d72")
    load.get_by_role("button", name="Retry load").click()
    expect(load_node).to_contain_text("\u00d73", timeout=20_000)  # the DAG's attempt count
    expect(page.locator("#action-error")).to_be_hidden()
    expect(page.locator("#run-status")).to_have_text("succeeded", timeout=20_000)
    assert page.evaluate("window.__sameDocument") is True

    # The dashboard and the history say so too.
    page.goto(srv.url + "/")
    expect(card.locator(".pill")).to_have_text("succeeded")
    _shot(page, tmp_path, "ui-dashboard.png")

    # A run started from the CLI while the dashboard is open: its card follows it live (no
    # reload), and what is typed in the start form stays.
    page.evaluate("window.__sameDocument = true")
    card.locator('input[name="param:WHO"]').fill("kept")
    flag.unlink()
    subprocess.run([sys.executable, "-m", "flowsh", "run", str(tmp_path / "flows" / "nightly.yaml")],
                   env={**os.environ, "FLOWSH_HOME": str(home)}, capture_output=True,
                   check=False, timeout=60)
    expect(card.locator(".pill")).to_have_text("failed", timeout=20_000)
    expect(card.locator(".wf-live")).to_have_attribute("data-status", "failed")
    assert "st-failed" in (card.get_attribute("class") or "")
    expect(card.locator('input[name="param:WHO"]')).to_have_value("kept")
    assert page.evaluate("window.__sameDocument") is True
    page.goto(srv.url + "/runs?status=succeeded")
    expect(page.locator("table.runs tbody tr")).to_have_count(1)
    assert not errors, errors
    assert all(u.startswith(srv.url) for u in requested), requested


def test_usable_on_a_phone(browser: Browser, night: tuple[Server, Path], tmp_path: Path) -> None:
    srv, _ = night
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True,
                            device_scale_factor=2)
    # Without the token, a browser gets nothing but the refusal.
    refused = page.goto(srv.url + "/")
    assert refused is not None and refused.status == 401 and "Start run" not in page.content()
    page.goto(srv.printed)
    page.locator('input[name="param:WHO"]').fill("phone")
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url("**/runs/*")
    expect(page.locator("#run-status")).to_have_text("failed", timeout=20_000)
    # The page itself never scrolls sideways; wide graphs scroll inside their own box.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    button = page.get_by_role("button", name="Resume").bounding_box()
    assert button is not None and button["x"] + button["width"] <= 390
    page.goto(srv.url + "/")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    _shot(page, tmp_path, "ui-phone.png")


def test_a_call_step_links_its_child_run_live(browser: Browser, home: Path,
                                              tmp_path: Path) -> None:
    """A run page open before its `call:` step starts gets the link to the child run live,
    without a reload; the child's page links back."""
    flows = tmp_path / "flows"
    flows.mkdir()
    flag = tmp_path / "go"
    (flows / "child.yaml").write_text("name: child\nsteps:\n  - name: c\n    run: echo c\n")
    (flows / "parent.yaml").write_text(
        "name: parent\nsteps:\n  - name: first\n"
        f"    run: while [ ! -f '{flag}' ]; do sleep 0.05; done\n"
        "  - name: sub\n    needs: [first]\n    call: child.yaml\n")
    with serve(home, "--workflows", str(flows)) as srv:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(srv.printed)
        page.locator('section.wf[data-workflow="parent"]').get_by_role(
            "button", name="Start run").click()
        page.wait_for_url("**/runs/*")
        page.evaluate("window.__sameDocument = true")
        sub = page.locator('details.log[data-step="sub"]')
        expect(sub).to_have_attribute("data-status", "pending", timeout=20_000)
        assert sub.locator(".child-run").count() == 0
        flag.touch()
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
        link = sub.locator("a.child-run")
        expect(link).to_be_visible()
        assert page.evaluate("window.__sameDocument") is True  # live, not reloaded
        link.click()
        page.wait_for_url("**/runs/*")
        expect(page.locator("h1")).to_have_text("child")
        expect(page.locator("a.parent-run")).to_be_visible()
