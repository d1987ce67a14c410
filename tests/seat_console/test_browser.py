"""Real flows in Debian's Chromium (headless, Playwright) against a running app with live events over Redis."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD, REDIS_URL, _unavailable
from tests.fakes.workflow_platform import free_port

pytestmark = pytest.mark.slow
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One app process on SQLite with Redis live events, and three operators."""
    if not Path(CHROMIUM).exists():
        _unavailable("Chromium", FileNotFoundError(CHROMIUM))
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as err:  # noqa: BLE001
        _unavailable("Redis", err)
    tmp = tmp_path_factory.mktemp("console")
    port = free_port()
    env = {**os.environ, "INTAKE_ENV": "test", "INTAKE_DATABASE_URL": f"sqlite:///{tmp / 'console.db'}",
           "INTAKE_VAR_DIR": str(tmp / "var"), "INTAKE_REDIS_URL": REDIS_URL, "INTAKE_LOG_LEVEL": "WARNING",
           "INTAKE_OUTBOX_POLL_SECONDS": "0.2"}
    intake = str(Path(sys.executable).with_name("intake"))
    subprocess.run([intake, "db", "upgrade"], env=env, check=True, capture_output=True)
    for user, role, ext in [("lead", "admin", "8001"), ("li", "agent", "8002"), ("wang", "agent", "8003")]:
        subprocess.run([intake, "admin", "create", "--username", user, "--role", role, "--extension", ext,
                        "--password", PASSWORD, "--display-name", {"lead": "张值班", "li": "李受理",
                                                                   "wang": "王受理"}[user]],
                       env=env, check=True, capture_output=True)
    proc = subprocess.Popen([intake, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(150):
        try:
            if httpx.get(f"{url}/status", timeout=1).status_code in (200, 503):
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield {"url": url, "env": env}
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def browser(server: dict[str, Any]) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def login(browser: Any, server: dict[str, Any], user: str) -> Any:
    page = browser.new_context(locale="zh-CN").new_page()
    page.goto(f"{server['url']}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server['url']}/")
    page.wait_for_selector("#live-status.on", timeout=10000)
    return page


def api_client(server: dict[str, Any], user: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server["url"], timeout=10)
    token = client.post("/api/session", json={"username": user, "password": PASSWORD}).json()["csrf_token"]
    return client, token


def test_wechat_draft_to_case_with_the_keyboard(browser: Any, server: dict[str, Any]) -> None:
    li = login(browser, server, "li")
    wang = login(browser, server, "wang")
    li.screenshot(path=str(ARTIFACTS / "workspace.png"), full_page=True)

    # A WeChat report arrives (as the bot files it) and shows up live in both inboxes.
    client, token = api_client(server, "lead")
    text = "<img src=x onerror=alert(1)>人民路与解放路交叉口污水井盖破损了"
    draft = client.post("/api/drafts", headers={"X-CSRF-Token": token}, json={
        "channel": "wechat", "text": text, "suggested_type_code": "01002", "suggestion_confidence": 0.91,
        "location": {"address": "人民路与解放路交叉口", "district": "中心区"},
        "reporter": {"openid": "oTEST-openid-000001"}}).json()
    row = f"tr[data-draft='{draft['id']}']"
    li.wait_for_selector(row, timeout=10000)
    wang.wait_for_selector(row, timeout=10000)
    assert li.locator("#inbox img").count() == 0  # the citizen's HTML is shown as text, never rendered

    li.click(f"{row} a")
    li.wait_for_selector("#draft")
    li.screenshot(path=str(ARTIFACTS / "draft.png"), full_page=True)
    li.locator("h1").click()  # focus on the page, not a field, so digits pick suggestions
    li.keyboard.press("1")
    assert li.input_value("#f-type") == "01002"
    li.keyboard.press("Control+Enter")
    li.wait_for_selector("#case-number", timeout=15000)
    number = li.inner_text("#case-number")
    assert len(number) == 13
    li.screenshot(path=str(ARTIFACTS / "accepted.png"), full_page=True)

    # The draft leaves every operator's inbox.
    wang.wait_for_selector(row, state="detached", timeout=10000)
    li.goto(f"{server['url']}/")
    assert li.locator(row).count() == 0

    li.goto(f"{server['url']}/cases/{number}")
    li.wait_for_selector(".timeline")
    assert "立案" in li.inner_text(".timeline")
    li.screenshot(path=str(ARTIFACTS / "case.png"), full_page=True)
    li.goto(f"{server['url']}/cases?q={number}")
    li.screenshot(path=str(ARTIFACTS / "search.png"), full_page=True)


def test_incoming_call_pops_on_the_right_seat_only(browser: Any, server: dict[str, Any]) -> None:
    import redis

    li = login(browser, server, "li")
    wang = login(browser, server, "wang")
    client, token = api_client(server, "li")
    li_id = next(o["id"] for o in api_client(server, "lead")[0].get("/api/operators").json() if o["username"] == "li")
    # The hotline publishes a screen pop for the seat that rings (here straight onto the live-event channel).
    redis.Redis.from_url(REDIS_URL).publish("intake:events", json.dumps({
        "topic": "call.ringing", "origin": "test",
        "data": {"operator_id": li_id, "caller_masked": "139****0001", "queue": "12319",
                 "history": [{"at": "2026-11-01", "number": "2026110100001", "status": "结案", "text": "井盖"}]}}))
    li.wait_for_selector(".call-ringing", timeout=10000)
    assert "139****0001" in li.inner_text("#call-pop")
    li.screenshot(path=str(ARTIFACTS / "screen-pop.png"), full_page=True)
    time.sleep(1)
    assert wang.locator(".call-ringing").count() == 0
    client.close()


def test_dashboard_numbers_change_live(browser: Any, server: dict[str, Any]) -> None:
    lead = login(browser, server, "lead")
    lead.goto(f"{server['url']}/dashboard")
    lead.wait_for_selector("#kpi-received")
    lead.wait_for_selector("#live-status.on", timeout=10000)
    before = int(lead.inner_text("#kpi-received"))
    client, token = api_client(server, "lead")
    client.post("/api/drafts", headers={"X-CSRF-Token": token}, json={"channel": "hotline", "text": "夜间施工噪音扰民"})
    deadline = time.monotonic() + 10
    while int(lead.inner_text("#kpi-received")) <= before and time.monotonic() < deadline:
        time.sleep(0.1)  # the page's CSP forbids eval, so poll from here instead of wait_for_function
    assert int(lead.inner_text("#kpi-received")) > before
    lead.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    lead.goto(f"{server['url']}/admin/operators")
    lead.screenshot(path=str(ARTIFACTS / "admin.png"), full_page=True)
    lead.goto(f"{server['url']}/knowledge?q=渣土车")
    lead.screenshot(path=str(ARTIFACTS / "knowledge.png"), full_page=True)


def test_agent_cannot_reach_admin_and_csrf_less_posts_fail(browser: Any, server: dict[str, Any]) -> None:
    li = login(browser, server, "li")
    response = li.goto(f"{server['url']}/admin/operators")
    assert response.status == 403
    client, _token = api_client(server, "li")
    assert client.post("/api/drafts", json={"text": "无令牌提交"}).status_code == 403
    assert client.post("/admin/operators", data={"username": "x", "display_name": "x", "password": "12345678",
                                                 "role": "admin"}).status_code == 403
