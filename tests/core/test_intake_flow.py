"""The whole loop through the API: draft → 立案 → 派遣 → 处置 → 反馈 → 核查 → 结案 → 评价, with notices."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from core.cases.models import Notification
from core.models import OutboxJob
from tests.conftest import Api

DEPT = {"Authorization": "Bearer dept-token"}


def new_draft(api: Api, **extra: Any) -> dict[str, Any]:
    body = {
        "channel": "hotline",
        "text": "市民来电反映：人民路与解放路交叉口东北角一污水井盖破损，存在安全隐患。",
        "location": {"address": "人民路与解放路交叉口", "district": "中心区", "lat": 30.59, "lng": 114.30},
        "reporter": {"name": "王先生", "phone": "138 1234 5678"},
    } | extra
    response = api.post("/api/drafts", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def dept(api: Api, number: str, action: str, **body: Any) -> dict[str, Any]:
    response = api.client.post(f"/api/workflow/cases/{number}/{action}", json=body, headers=DEPT)
    assert response.status_code == 200, response.text
    return response.json()


def count(api: Api, stmt: Any) -> int:
    async def _q() -> int:
        async with api.ctx.sessions() as session:
            return int(await session.scalar(stmt) or 0)

    return int(api.run(_q))


def test_draft_to_rating_through_every_step(api: Api) -> None:
    draft = new_draft(api)
    assert draft["status"] == "pending_review"
    assert draft["reporter_phone_masked"] == "138****5678"
    assert "13812345678" not in json.dumps(draft)

    case = api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002"}).json()
    assert case["state"] == "submitting" and case["number"] is None
    api.drain()
    case = api.get(f"/api/drafts/{draft['id']}").json()
    number = case["case_number"]
    assert number and len(number) == 13

    dept(api, number, "dispatch", note="派遣至排水公司", department="drainage")
    dept(api, number, "handle")
    dept(api, number, "feedback", note="已更换井盖", attachments=[{"kind": "photo", "url": "/media/after.jpg"}])
    dept(api, number, "verify", passed=True, note="现场核查已修复")
    api.drain()
    rated = api.post(f"/api/cases/{number}/rating", json={"score": 5, "channel": "sms"})
    assert rated.status_code == 200, rated.text
    api.drain()

    case = api.get(f"/api/cases/{number}").json()
    steps = [e["step_label"] for e in case["timeline"]]
    assert steps == ["信息采集", "立案", "派遣", "处置", "反馈", "核查", "结案", "评价"]
    assert case["state"] == "closed" and case["rating_score"] == 5
    assert case["deadline_at"] is not None
    feedback = next(e for e in case["timeline"] if e["step"] == "feedback")
    assert feedback["attachments"] == [{"kind": "photo", "url": "/media/after.jpg"}]

    templates = api.run(_notification_templates, api)
    assert sorted(templates) == ["accepted", "closed", "dispatched", "rated"]
    log_lines = api.ctx.settings.sms_outbox_path.read_text(encoding="utf-8").splitlines()  # type: ignore[union-attr]
    assert len(log_lines) == 4
    sent = [json.loads(line) for line in log_lines]
    assert all(s["to"] == "+8613812345678" and s["text"].startswith("【示例城管】") for s in sent)
    assert number in sent[0]["text"]


def test_the_accepted_type_is_a_label_for_the_classifier(api: Api) -> None:
    from classifier.corpus import load_extra

    draft = new_draft(api)
    api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "06010"})
    api.drain()
    api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "06010"})  # replayed: one label
    api.drain()
    labels = load_extra(api.ctx.settings.var_dir)
    assert [(e.source, e.code) for e in labels] == [("corrections", "06010")]
    assert labels[0].text == draft["text"]


async def _notification_templates(api: Api) -> list[str]:
    async with api.ctx.sessions() as session:
        rows = await session.scalars(select(Notification.template).where(Notification.status == "sent"))
        return list(rows)


def test_replayed_submission_yields_one_case(api: Api) -> None:
    first = api.post("/api/drafts", json={"text": "小区门口垃圾堆积", "reporter": {"phone": "13900001111"}},
                     headers={"Idempotency-Key": "order-77"}).json()
    again = api.post("/api/drafts", json={"text": "小区门口垃圾堆积", "reporter": {"phone": "13900001111"}},
                     headers={"Idempotency-Key": "order-77"}).json()
    assert first["id"] == again["id"] and first["number"] == again["number"]

    one = api.post(f"/api/drafts/{first['id']}/accept", json={"case_type_code": "06010"}).json()
    two = api.post(f"/api/drafts/{first['id']}/accept", json={"case_type_code": "06010"}).json()
    assert one["id"] == two["id"]
    api.drain()
    api.drain()
    from core.cases.models import Case
    from core.workflow.models import WorkflowCase

    assert count(api, select(func.count()).select_from(Case)) == 1
    assert count(api, select(func.count()).select_from(WorkflowCase)) == 1
    assert count(api, select(func.count()).select_from(OutboxJob).where(OutboxJob.kind == "workflow.submit")) == 1
    # The 受理 notice was queued once, however often the step was reported.
    assert count(api, select(func.count()).select_from(Notification)) == 1


def test_verification_failure_sends_the_case_back(api: Api) -> None:
    draft = new_draft(api)
    api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002"})
    api.drain()
    number = api.get(f"/api/drafts/{draft['id']}").json()["case_number"]
    dept(api, number, "dispatch")
    dept(api, number, "handle")
    dept(api, number, "feedback", note="已处理")
    back = dept(api, number, "verify", passed=False, note="井盖仍松动")
    assert back["step"] == "handle"
    case = api.get(f"/api/cases/{number}").json()
    assert case["step"] == "handle" and case["state"] == "open"
    # Rating before 结案 is refused.
    response = api.post(f"/api/cases/{number}/rating", json={"score": 3})
    assert response.status_code == 409 and response.json()["error"]["id"] == "case-not-closed"


def test_department_actions_need_the_token_and_a_valid_transition(api: Api) -> None:
    draft = new_draft(api)
    api.post(f"/api/drafts/{draft['id']}/accept", json={"case_type_code": "01002"})
    api.drain()
    number = api.get(f"/api/drafts/{draft['id']}").json()["case_number"]
    refused = api.client.post(f"/api/workflow/cases/{number}/dispatch", json={}, headers={"Authorization": "Bearer x"})
    assert refused.status_code == 401
    wrong = api.client.post(f"/api/workflow/cases/{number}/verify", json={"passed": True}, headers=DEPT)
    assert wrong.status_code == 409 and wrong.json()["error"]["id"] == "transition-not-allowed"
    missing = api.client.post("/api/workflow/cases/000/dispatch", json={}, headers=DEPT)
    assert missing.status_code == 404


def test_reject_and_merge(api: Api) -> None:
    first = new_draft(api)
    api.post(f"/api/drafts/{first['id']}/accept", json={"case_type_code": "01002"})
    api.drain()
    number = api.get(f"/api/drafts/{first['id']}").json()["case_number"]
    dup = new_draft(api, text="同一个井盖又坏了")
    merged = api.post(f"/api/drafts/{dup['id']}/merge", json={"case_number": number}).json()
    assert merged["status"] == "merged"
    other = new_draft(api, text="这不归城管管")
    rejected = api.post(f"/api/drafts/{other['id']}/reject", json={"reason": "不属于城市管理范围"}).json()
    assert rejected["status"] == "rejected" and rejected["reject_reason"] == "不属于城市管理范围"
    again = api.post(f"/api/drafts/{other['id']}/accept", json={"case_type_code": "01002"})
    assert again.status_code == 409 and again.json()["error"]["id"] == "draft-closed"
    inbox = api.get("/api/drafts").json()
    assert inbox == []
