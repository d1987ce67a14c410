"""Login, sessions, CSRF and role checks."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from core.app import create_app
from core.settings import Settings
from tests.conftest import PASSWORD, Api, create_operator_sync


def test_login_form_sets_a_session_and_shows_the_workspace(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        create_operator_sync(Api(client), "li", role="agent")
        page = client.get("/login")
        assert page.status_code == 200 and "坐席登录" in page.text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        bad = client.post("/login", data={"username": "li", "password": "wrong-password", "csrf_token": token})
        assert bad.status_code == 401 and "用户名或密码错误" in bad.text
        ok = client.post("/login", data={"username": "li", "password": PASSWORD, "csrf_token": token},
                         follow_redirects=False)
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        home = client.get("/")
        assert home.status_code == 200 and "待受理" in home.text and "受理员" in home.text


def test_login_form_without_csrf_is_refused(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        create_operator_sync(Api(client), "li", role="agent")
        response = client.post("/login", data={"username": "li", "password": PASSWORD, "csrf_token": "forged"})
        assert response.status_code == 403 and response.json()["error"]["id"] == "csrf-failed"


def test_api_requires_login_and_csrf(api: Api) -> None:
    with TestClient(api.client.app) as anonymous:
        assert anonymous.get("/api/drafts").json()["error"]["id"] == "unauthorized"
    no_csrf = api.client.post("/api/drafts", json={"text": "井盖坏了"})
    assert no_csrf.status_code == 403 and no_csrf.json()["error"]["id"] == "csrf-failed"
    wrong = api.client.post("/api/drafts", json={"text": "井盖坏了"}, headers={"X-CSRF-Token": "nope"})
    assert wrong.status_code == 403
    assert api.post("/api/drafts", json={"text": "井盖坏了"}).status_code == 201


def test_roles_are_enforced(api: Api) -> None:
    create_operator_sync(api, "agent1", role="agent")
    with TestClient(api.client.app) as other:
        agent = Api(other).login("agent1")
        assert agent.get("/api/operators").status_code == 403
    assert api.get("/api/operators").status_code == 200


def test_wrong_password_is_audited_and_uniform(api: Api) -> None:
    unknown = api.client.post("/api/session", json={"username": "ghost", "password": "x" * 10})
    wrong = api.client.post("/api/session", json={"username": "admin", "password": "x" * 10})
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.json() == wrong.json()


def test_logout_ends_the_session(api: Api) -> None:
    response = api.post("/logout", follow_redirects=False)
    assert response.status_code == 303
    assert api.get("/api/drafts").status_code == 401
