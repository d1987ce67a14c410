"""Administration pages: every edit takes effect, is audited, and is for admins only."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from core.models import AuditEntry
from tests.conftest import Api, create_operator_sync


def _audit(api: Api) -> list[str]:
    async def _q() -> list[str]:
        async with api.ctx.sessions() as session:
            return list(await session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))

    result: list[str] = api.run(_q)
    return result


def test_article_edit_is_searchable_and_audited(api: Api) -> None:
    form = {"csrf_token": api.csrf, "title": "共享电单车头盔怎么借", "category": "其他",
            "questions": "头盔在哪借\n电单车头盔", "answer": "示例市共享电单车头盔随车配备，如缺失可在应用内报修，城管不负责发放头盔。",
            "keywords": "头盔, 电单车"}
    response = api.client.post("/admin/articles/kb-helmet", data=form, follow_redirects=False)
    assert response.status_code == 303
    page = api.get("/knowledge", params={"q": "电单车头盔在哪借"}).text
    assert "共享电单车头盔怎么借" in page
    api.client.post("/admin/articles/kb-helmet", data={**form, "delete": "yes"})
    assert "共享电单车头盔怎么借" not in api.get("/knowledge", params={"q": "电单车头盔在哪借"}).text
    assert _audit(api)[-2:] == ["kb.article.save", "kb.article.delete"]


def test_routing_edit_changes_the_department_of_new_cases(api: Api) -> None:
    response = api.client.post("/admin/routing/06010", data={"csrf_token": api.csrf, "department": "jj"},
                               follow_redirects=False)
    assert response.status_code == 303
    draft = api.post("/api/drafts", json={"text": "路边垃圾成堆"}).json()
    case = api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "06010"}).json()
    assert case["department"] == "jj"
    bad = api.client.post("/admin/routing/06010", data={"csrf_token": api.csrf, "department": "nope"})
    assert bad.status_code == 400 and bad.json()["error"]["id"] == "unknown-routing-target"
    assert "kb.routing.save" in _audit(api)


def test_template_edit_is_validated(api: Api) -> None:
    ok = api.client.post("/admin/templates/accepted", data={"csrf_token": api.csrf,
                                                           "text": "您的{{ case_type }}反映已受理，编号{{ case_number }}。"},
                         follow_redirects=False)
    assert ok.status_code == 303
    assert "您的{{ case_type }}反映已受理" in api.get("/admin/templates").text
    bad = api.client.post("/admin/templates/accepted", data={"csrf_token": api.csrf, "text": "{{ broken"})
    assert bad.status_code == 400 and bad.json()["error"]["id"] == "bad-template"


def test_agents_cannot_administer(api: Api) -> None:
    create_operator_sync(api, "agent1", role="agent")
    with TestClient(api.client.app) as other:
        agent = Api(other).login("agent1")
        for path in ("/admin/operators", "/admin/articles", "/admin/routing", "/admin/templates"):
            assert agent.get(path).status_code == 403, path
        refused = agent.client.post("/admin/routing/06010", data={"csrf_token": agent.csrf, "department": "jj"})
        assert refused.status_code == 403
    no_csrf = api.client.post("/admin/routing/06010", data={"department": "jj"})
    assert no_csrf.status_code == 403 and no_csrf.json()["error"]["id"] == "csrf-failed"
