"""12345 work-order transfer: idempotent on the order id, result called back signed when the case closes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from core.cases.models import Case, DraftCase
from core.models import AuditEntry, Channel
from core.open311.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from core.open311.wiring import sweep_once
from tests.conftest import Api
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.open311.conftest import drive_to_close, make_key, query


def order(receiver: WebhookReceiver, order_id: str = "GD202611220153", **extra: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "caller": {"name": "李女士", "phone": "13912345678"},
        "content": "来电反映：解放路与中山路交叉口东南角人行道上污水井盖缺失，已有行人险些踩空，要求尽快处理。",
        "deadline": "2026-11-24 18:00:00",
        "category": "城市管理-市政设施-污水井盖",
        "callback_url": f"{receiver.url}/12345/result",
        "address": "解放路与中山路交叉口东南角",
        "district": "中心区",
        "urgent": True,
    } | extra


def test_same_order_three_times_gives_one_case_and_one_signed_callback(api: Api, receiver: WebhookReceiver) -> None:
    platform = make_key(api, "12345平台", "12345")
    answers = [api.client.post("/api/transfer/12345/orders", json=order(receiver), headers=platform.headers)
               for _ in range(3)]
    assert [a.status_code for a in answers] == [201, 200, 200]
    bodies = [a.json() for a in answers]
    assert len({b["draft_number"] for b in bodies}) == 1
    assert [b["duplicate"] for b in bodies] == [False, True, True]
    assert bodies[0]["status_label"] == "待受理"

    (draft,) = query(api, select(DraftCase))
    assert draft.channel == Channel.TRANSFER_12345
    assert draft.raw_text.startswith("【12345转办】工单号 GD202611220153\n【紧急】\n来电反映")
    assert "12345 办结时限：2026年11月24日 18:00" in draft.raw_text and "来电人：李女士" in draft.raw_text
    assert draft.suggested_type_code == "01002"  # 污水井盖 in their category names our type
    assert api.get(f"/api/drafts/{draft.id}").json()["reporter_phone_masked"] == "139****5678"

    number = drive_to_close(api, draft.id)
    assert query(api, select(func.count()).select_from(Case)) == [1]
    status = api.client.get("/api/transfer/12345/orders/GD202611220153", headers=platform.headers).json()
    assert status["case_number"] == number and status["status_label"] == "结案"
    # Delivered a fourth time after closure: still the same draft, no new case, no second callback.
    late = api.client.post("/api/transfer/12345/orders", json=order(receiver), headers=platform.headers)
    assert late.status_code == 200 and late.json()["case_number"] == number
    api.drain()

    (callback,) = receiver.accepted
    assert callback.path == "/12345/result"
    assert callback.signed_by(platform.secret)
    assert not callback.signed_by("someone-else")
    assert callback.headers["x-intake-event"] == "transfer.result"
    result = callback.json
    assert result["order_id"] == "GD202611220153" and result["case_number"] == number
    assert result["result"] == "办结" and result["result_code"] == "closed"
    assert result["result_note"] == "已更换井盖；现场核查已修复"
    assert result["deadline"] == "2026-11-24T18:00:00+08:00"
    assert [t["step_label"] for t in result["timeline"]] == ["信息采集", "立案", "派遣", "处置", "反馈", "核查", "结案"]
    (delivery,) = query(api, select(WebhookDelivery))
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 1
    assert [a.status_code for a in query(api, select(DeliveryAttempt))] == [200]
    actions = query(api, select(AuditEntry.action).where(AuditEntry.actor == "12345平台").order_by(AuditEntry.id))
    assert actions.count("transfer12345.order") == 1 and actions.count("transfer12345.order.repeat") == 3


def test_rejected_order_is_returned_to_12345(api: Api, receiver: WebhookReceiver) -> None:
    platform = make_key(api, "12345平台", "12345")
    created = api.client.post("/api/transfer/12345/orders", json=order(receiver, "GD-2", content="咨询社保卡补办流程"),
                              headers=platform.headers).json()
    (draft,) = query(api, select(DraftCase))
    assert created["draft_number"] == draft.number
    assert api.post(f"/api/drafts/{draft.id}/reject", json={"reason": "不属于城市管理范围，请转人社部门"}).status_code == 200
    assert api.run(sweep_once, api.ctx) == 1
    assert api.run(sweep_once, api.ctx) == 0  # once only
    api.drain()
    (callback,) = receiver.accepted
    assert callback.signed_by(platform.secret)
    assert callback.json["result"] == "退回" and callback.json["result_note"] == "不属于城市管理范围，请转人社部门"


def test_transfer_needs_the_12345_scope_and_a_valid_order(api: Api, receiver: WebhookReceiver) -> None:
    app_key = make_key(api, "app", "open311")
    refused = api.client.post("/api/transfer/12345/orders", json=order(receiver), headers=app_key.headers)
    assert refused.status_code == 403 and refused.json()["error"]["id"] == "scope-denied"
    anonymous = api.client.post("/api/transfer/12345/orders", json=order(receiver))
    assert anonymous.status_code == 403 and anonymous.json()["error"]["id"] == "invalid-api-key"
    platform = make_key(api, "12345平台", "12345")
    bad_url = api.client.post("/api/transfer/12345/orders", json=order(receiver, callback_url="ftp://x/y"),
                              headers=platform.headers)
    assert bad_url.status_code == 422
    bad_phone = api.client.post("/api/transfer/12345/orders",
                                json=order(receiver, caller={"name": "张", "phone": "123"}), headers=platform.headers)
    assert bad_phone.status_code == 422 and bad_phone.json()["error"]["id"] == "invalid-phone"
    assert query(api, select(DraftCase)) == []
    missing = api.client.get("/api/transfer/12345/orders/NOPE", headers=platform.headers)
    assert missing.status_code == 404


def test_concurrent_deliveries_of_one_order(api: Api, receiver: WebhookReceiver) -> None:
    import asyncio

    import pytest

    from core.open311 import service
    from core.open311.models import ApiClient
    from core.open311.schemas import TransferOrder

    if api.ctx.settings.is_sqlite:
        pytest.skip("SQLite has one writer: concurrent deliveries are a PostgreSQL concern")
    make_key(api, "12345平台", "12345")

    async def burst() -> list[bool]:
        ctx = api.ctx
        async with ctx.sessions() as session:
            client = await session.scalar(select(ApiClient).where(ApiClient.name == "12345平台"))
        assert client is not None
        body = TransferOrder.model_validate(order(receiver, "GD-RACE"))

        async def one() -> bool:
            async with ctx.uow() as session:
                _req, _draft, created = await service.receive_order(
                    session=session, kb=ctx.kb, client=client, order=body, suggestion=service.Suggestion(),
                    region="CN", ip=None)
                return created

        return list(await asyncio.gather(*(one() for _ in range(10))))

    assert sorted(api.run(burst)) == [False] * 9 + [True]
    assert len(query(api, select(DraftCase))) == 1


def test_merged_orders_and_requests_follow_the_case(api: Api, receiver: WebhookReceiver) -> None:
    from tests.open311.test_requests import MANHOLE

    platform = make_key(api, "12345平台", "12345")
    app_key = make_key(api, "app")
    first = api.client.post("/api/transfer/12345/orders", json=order(receiver, "GD-A"), headers=platform.headers)
    assert first.status_code == 201
    (draft,) = query(api, select(DraftCase))
    # A citizen app reports the same manhole; the seat merges it into the 12345 case while that is open.
    request_id = api.client.post("/open311/v2/requests.json", data=MANHOLE, headers=app_key.headers).json()[0][
        "service_request_id"]
    accepted = api.post(f"/api/drafts/{draft.id}/accept", json={"case_type_code": "01002"})
    assert accepted.status_code == 200
    api.drain()
    number = api.get(f"/api/drafts/{draft.id}").json()["case_number"]
    app_draft = query(api, select(DraftCase).where(DraftCase.number == request_id))[0]
    assert api.post(f"/api/drafts/{app_draft.id}/merge", json={"case_number": number}).status_code == 200
    shown = api.get(f"/open311/v2/requests/{request_id}.json", headers=app_key.headers).json()[0]
    assert shown["case_number"] == number and shown["status_notes"].startswith(f"已并入案件 {number}")
    closed_number = drive_to_close_number(api, number)
    shown = api.get(f"/open311/v2/requests/{request_id}.json", headers=app_key.headers).json()[0]
    assert shown["status"] == "closed" and closed_number == number

    # A second 12345 order about the same manhole arrives after 结案 and is merged into the closed case.
    api.client.post("/api/transfer/12345/orders", json=order(receiver, "GD-B"), headers=platform.headers)
    late = query(api, select(DraftCase).order_by(DraftCase.id.desc()))[0]
    assert api.post(f"/api/drafts/{late.id}/merge", json={"case_number": number}).status_code == 200
    api.run(sweep_once, api.ctx)
    api.drain()
    results = {r.json["order_id"]: r.json for r in receiver.accepted}
    assert set(results) == {"GD-A", "GD-B"}
    assert results["GD-B"]["result"] == "办结" and results["GD-B"]["case_number"] == number
    assert all(r.signed_by(platform.secret) for r in receiver.accepted)


def drive_to_close_number(api: Api, number: str) -> str:
    dept = {"Authorization": "Bearer dept-token"}
    for action, body in (("dispatch", {}), ("handle", {}), ("feedback", {"note": "已处理"}), ("verify", {"passed": True})):
        assert api.client.post(f"/api/workflow/cases/{number}/{action}", json=body, headers=dept).status_code == 200
    api.drain()
    return number
