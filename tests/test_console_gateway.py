"""The console against the real gateway, in Debian's Chromium driven by Playwright: the
overview counts the requests an OpenAI client just sent, a key made in the page works with
the SDK, and revoking it in the page refuses the SDK's next request. Every view leaves a
screenshot in the test's tmp folder (the fake-API test, tests/test_console_browser.py,
covers each view's details)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import openai
import pytest
from playwright.sync_api import expect

from tests.conftest import start_gateway
from tests.gateway_process import GatewayProcess
from tests.redis_server import RedisServer
from tests.test_admin import ADMIN, SECRETS, config  # noqa: F401 - the admin tests' config fixture
from tests.test_console_browser import browser, context, page, shoot  # noqa: F401

SENT = 5


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer, config, tmp_path_factory) -> Iterator[GatewayProcess]:  # noqa: F811
    redis_server.command("FLUSHALL")
    env = {
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_ADMIN_KEY": ADMIN,
        "GATEWAY_REDIS_URL": redis_server.url,
    }
    process = start_gateway(tmp_path_factory, "granian", env)
    yield process
    process.stop()


def sdk(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=10)


def ask(gateway: GatewayProcess, key: str) -> str:
    reply = sdk(gateway, key).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}]
    )
    return reply.choices[0].message.content or ""


def test_the_console_on_the_gateway(gateway, page, tmp_path):  # noqa: F811
    page, _ = page
    for _ in range(SENT):
        assert ask(gateway, SECRETS["alpha"]).startswith("This is a mock response")
    time.sleep(1.5)  # the ledger reaches Redis within a second

    page.goto(f"{gateway.url}/console/")
    page.fill("#login-key", ADMIN)
    page.click("#login-form button[type=submit]")
    expect(page.locator("#topbar")).to_be_visible()
    expect(page.locator('[data-stat="requests"]')).to_have_attribute("data-value", str(SENT))
    shoot(page, tmp_path, "overview")

    page.click('.nav a[data-view="keys"]')
    page.click('[data-role="create"]')
    page.locator("#key-form").locator('[name="id"]').fill("made-in-the-page")
    page.locator("#key-form-submit").click()
    expect(page.locator("#secret-dialog")).to_be_visible()
    secret = page.locator("#secret-value").input_value()
    assert secret.startswith("sk-gw-")
    page.locator("#secret-dialog").locator("[data-close]").click()
    assert ask(gateway, secret).startswith("This is a mock response")  # the page's key works

    row = page.locator('tr[data-key="made-in-the-page"]')
    row.get_by_role("button", name="Revoke").click()
    page.click("#confirm-ok")
    expect(row).to_contain_text("revoked")
    shoot(page, tmp_path, "keys")
    with pytest.raises(openai.AuthenticationError):
        ask(gateway, secret)

    for view in ("spend", "deployments", "requests"):
        page.click(f'.nav a[data-view="{view}"]')
        page.wait_for_load_state("networkidle")
        shoot(page, tmp_path, view)
    rows = page.locator('[data-role="rows"] tr')
    expect(rows.first).to_be_visible()
    assert secret not in gateway.log()
