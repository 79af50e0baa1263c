"""The console in a real browser: Debian's Chromium, headless, driven by Playwright, against
tests/console/fake_admin.py (the admin API's contract with fixed data, and the gateway's
Content-Security-Policy on every page).

It logs in, reads the overview, creates, edits and revokes a key, and visits every view,
failing on any console error or warning and any page error: a CSP violation (an inline
style or script, a load from another origin) shows up there. Each view leaves a screenshot
in the test's tmp folder; the overview's is also saved as docs/console-overview.png.

Playwright cannot download its own browser here, so the test launches /usr/bin/chromium:
tests/console/install_browser.sh installs it. A missing browser fails the test, loudly.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.console.fake_admin import ADMIN_KEY, CSP, OVERVIEW_1H_REQUESTS, overview_numbers

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
DOCS_SCREENSHOT = ROOT / "docs" / "console-overview.png"
# What Chromium logs for a fetch answered 401: expected only where a test sends a bad key.
REFUSED_LOAD = re.compile(r"Failed to load resource: .*status of 401")


@pytest.fixture(scope="module")
def fake_admin(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("fake-admin") / "fake_admin.log"
    with log.open("w") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.console.fake_admin", "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        line = process.stdout.readline()  # "listening on http://127.0.0.1:PORT"
        assert line.startswith("listening on "), f"fake_admin did not start: {log.read_text()}"
        yield line.split()[-1]
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: run `bash tests/console/install_browser.sh` "
        "(Debian's chromium; Playwright cannot download its own browser here)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield browser
        browser.close()


class ConsoleWatch:
    """Every console error or warning and every page error; a few can be expected for a while
    (the 401 that a wrong key draws), the rest fail the test when it ends."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        self.expected: list[re.Pattern[str]] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"pageerror: {error}"))

    def _console(self, message) -> None:
        text = message.text
        csp = "Content Security Policy" in text or "CSP violation" in text
        if message.type not in ("error", "warning") and not csp:
            return
        if not csp and any(pattern.search(text) for pattern in self.expected):
            return
        self.problems.append(f"console {message.type}: {text}")


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    # Reported by the page itself too, in case a violation ever goes unlogged.
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) =>"
        " console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));"
    )
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[tuple[Page, ConsoleWatch]]:
    page = context.new_page()
    watch = ConsoleWatch(page)
    page.set_default_timeout(10_000)
    yield page, watch
    assert watch.problems == [], "\n".join(watch.problems)


def log_in(page: Page, base: str, view: str = "overview") -> None:
    response = page.goto(f"{base}/console/#/{view}")
    assert response is not None
    assert response.headers.get("content-security-policy") == CSP
    page.fill("#login-key", ADMIN_KEY)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#topbar")).to_be_visible()


def shoot(page: Page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def expect_chart(page: Page) -> None:
    """uPlot drew a canvas of a real size (it sizes it through the CSSOM, allowed by the CSP)."""
    canvas = page.locator(".chart .uplot canvas").first
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100, box


def test_the_watch_sees_a_csp_violation(fake_admin, page):
    """The CSP is on and enforced, and a violation reaches the watch that every test ends on."""
    page, watch = page
    page.goto(f"{fake_admin}/console/")
    page.evaluate("document.body.setAttribute('style', 'background: red')")
    expect(page.locator("body")).not_to_have_css("background-color", "rgb(255, 0, 0)")
    for _ in range(40):  # the console message arrives as an event: give it time
        if watch.problems:
            break
        page.wait_for_timeout(50)
    assert any("Content Security Policy" in problem for problem in watch.problems)
    watch.problems.clear()


def test_a_wrong_key_is_refused_then_the_overview_shows_the_numbers(fake_admin, page, tmp_path):
    page, watch = page
    watch.expected.append(REFUSED_LOAD)
    page.goto(f"{fake_admin}/console/")
    page.fill("#login-key", "not-the-key")
    page.click("#login-form button[type=submit]")
    expect(page.locator("#login-error")).to_contain_text("Invalid admin key")
    shoot(page, tmp_path, "login")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.evaluate("localStorage.length") == 0
    watch.expected.clear()

    page.fill("#login-key", ADMIN_KEY)
    page.click("#login-form button[type=submit]")
    requests = page.locator('[data-stat="requests"]')
    expect(requests).to_have_attribute("data-value", str(OVERVIEW_1H_REQUESTS))
    expect(page.locator('[data-role="rows"] tr')).to_have_count(4)
    expect_chart(page)
    # The key is in this tab's sessionStorage only: no cookie, nothing in localStorage.
    assert page.evaluate("sessionStorage.getItem('gateway.adminKey')") == ADMIN_KEY
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    shutil.copyfile(shoot(page, tmp_path, "overview"), DOCS_SCREENSHOT)

    page.click('[data-window="7d"]')
    expect(requests).to_have_attribute("data-value", str(overview_numbers("7d")["requests"]))
    expect(page.locator('[data-window="7d"]')).to_have_attribute("aria-pressed", "true")


def test_keys_create_shows_the_secret_once_edit_and_revoke(fake_admin, page, tmp_path):
    page, _ = page
    log_in(page, fake_admin, "keys")
    expect(page.locator('tr[data-key="search-prod"] progress')).to_be_visible()

    page.click('[data-role="create"]')
    form = page.locator("#key-form")
    form.locator('[name="id"]').fill("browser-test")
    form.locator('[name="owner"]').fill("dana@example.com")
    form.locator('[name="models"]').fill("gpt-4o-mini, gpt-4o")
    form.locator('[name="rpm"]').fill("60")
    form.locator('[name="budget_amount"]').fill("25")
    form.locator("#key-form-submit").click()

    dialog = page.locator("#secret-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#secret-key-id")).to_have_text("browser-test")
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("sk-gw-"), secret
    page.click("#secret-copy")
    expect(page.locator("#secret-copied")).to_contain_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shoot(page, tmp_path, "keys-secret")
    dialog.locator("[data-close]").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("#secret-value")).to_have_value("")  # gone from the page too

    row = page.locator('tr[data-key="browser-test"]')
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("60 requests / min")
    expect(row.locator(".line")).to_have_text(["gpt-4o-mini", "gpt-4o"])

    row.get_by_role("button", name="Edit").click()
    form.locator('[name="rpm"]').fill("120")
    form.locator("#key-form-submit").click()
    expect(row).to_contain_text("120 requests / min")

    # Cancelling the confirmation leaves the key alone; confirming revokes it.
    row.get_by_role("button", name="Revoke").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Cancel").click()
    expect(row).to_contain_text("active")
    row.get_by_role("button", name="Revoke").click()
    expect(page.locator("#confirm-text")).to_contain_text("browser-test")
    page.click("#confirm-ok")
    expect(row).to_contain_text("revoked")
    expect(row.get_by_role("button", name="Revoke")).to_be_disabled()
    shoot(page, tmp_path, "keys")


def test_spend_deployments_and_requests_views(fake_admin, page, tmp_path):
    page, watch = page
    log_in(page, fake_admin, "spend")
    totals = page.locator('[data-role="totals"] tr')
    expect(totals.filter(has_text="search-prod")).to_have_count(1)
    expect(totals.last).to_contain_text("Total")
    expect_chart(page)
    page.select_option('select[name="group_by"]', "model")
    expect(page.locator('[data-role="group-head"]')).to_have_text("Model")
    expect(totals).to_have_count(5)  # 4 models and the total
    shoot(page, tmp_path, "spend")
    page.select_option('select[name="granularity"]', "hour")  # 7 days x 24 h x 4 models
    expect(page.locator('[data-role="ledger-note"]')).to_contain_text("first 500 of 672")
    expect(page.locator('[data-role="rows"] tr')).to_have_count(500)
    with page.expect_download() as download:
        page.click('[data-role="csv"]')
    csv = Path(download.value.path()).read_text()
    assert csv.splitlines()[0] == (
        "period,group,requests,errors,prompt_tokens,completion_tokens,cached_tokens,cost"
    )
    assert download.value.suggested_filename.startswith("spend-by-model-")

    page.click('.nav a[data-view="deployments"]')
    cooling = page.locator('tr[data-deployment="anthropic-main"]')
    expect(cooling).to_contain_text("cooling")
    expect(cooling).to_contain_text("529 overloaded_error")
    expect(page.locator(".badge.ok")).to_have_count(4)
    shoot(page, tmp_path, "deployments")

    page.click('.nav a[data-view="requests"]')
    rows = page.locator('[data-role="rows"] tr')
    expect(rows).to_have_count(50)
    page.fill('input[name="status"]', "429")
    page.click('[data-role="filters"] button[type=submit]')
    expect(rows).to_have_count(15)  # every 8th of the fake's 120
    expect(rows.locator(".badge").filter(has_not_text="429")).to_have_count(0)
    with page.expect_request(re.compile(r"/admin/requests\?"), timeout=8_000):
        page.check('input[name="auto"]')  # loads at once, then every 5 s
    with page.expect_request(re.compile(r"/admin/requests\?"), timeout=8_000):
        pass
    page.uncheck('input[name="auto"]')
    shoot(page, tmp_path, "requests")

    # A key refused mid-session (rotated, say) sends the operator back to the login.
    watch.expected.append(REFUSED_LOAD)
    page.evaluate("sessionStorage.setItem('gateway.adminKey', 'rotated-away')")
    page.click('.nav a[data-view="deployments"]')
    expect(page.locator("#login-error")).to_contain_text("refused")
    assert page.evaluate("sessionStorage.length") == 0
