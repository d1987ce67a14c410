"""Status webhooks: subscription per key, signed deliveries on every step, retries with backoff, a delivery log."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select

from core.cases.models import DraftCase
from core.open311.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from core.open311.wiring import sweep_once
from tests.conftest import Api, make_settings
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.open311.conftest import Key, drive_to_close, make_key, query
from tests.open311.test_requests import MANHOLE


def subscribe(api: Api, key: Key, url: str) -> dict[str, Any]:
    response = api.client.put("/open311/v2/subscription.json", json={"webhook_url": url}, headers=key.headers)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def submit(api: Api, key: Key) -> str:
    response = api.client.post("/open311/v2/requests.json", data=MANHOLE, headers=key.headers)
    assert response.status_code == 201, response.text
    return str(response.json()[0]["service_request_id"])


def deliver_until(api: Api, done: Any, *, rounds: int = 60) -> None:
    """Run outbox batches (waiting out the test backoff of ≤ 0.2 s) until `done()` holds."""
    for _ in range(rounds):
        api.step()
        if done():
            return
        time.sleep(0.1)
    raise AssertionError("deliveries did not finish")


def test_every_step_is_posted_signed(api: Api, receiver: WebhookReceiver) -> None:
    key = make_key(api, "城市随手拍")
    shown = subscribe(api, key, f"{receiver.url}/hooks/intake")
    assert shown["webhook_url"].endswith("/hooks/intake") and key.secret.startswith(shown["signing_secret_hint"][:-1])
    request_id = submit(api, key)
    (draft,) = query(api, select(DraftCase))
    number = drive_to_close(api, draft.id)
    api.drain()

    posts = receiver.accepted
    assert all(p.signed_by(key.secret) and p.path == "/hooks/intake" for p in posts)
    assert [p.json["step_label"] for p in posts] == ["立案", "派遣", "处置", "反馈", "核查", "结案"]
    assert all(p.json["service_request_id"] == request_id and p.json["event"] == "service_request.updated"
               for p in posts)
    assert posts[-1].json["status"] == "closed" and posts[-1].json["case_number"] == number
    assert posts[1].json["status_notes"].startswith("已派遣至")
    assert len({p.headers["x-intake-delivery"] for p in posts}) == 6

    log = api.get("/open311/v2/deliveries.json", headers=key.headers).json()
    assert len(log) == 6 and {d["status"] for d in log} == {"delivered"}
    assert all(d["service_request_id"] == request_id and d["attempts"] == 1 for d in log)
    admin_log = api.get("/api/open311/deliveries").json()
    assert len(admin_log) == 6 and admin_log[0]["payload"]["event"] == "service_request.updated"

    # A step reported twice (an at-least-once platform) queues nothing new.
    async def replay() -> None:
        from core.cases.models import Case
        from core.open311 import service

        async with api.ctx.uow() as session:
            case = await session.scalar(select(Case).where(Case.number == number))
            assert case is not None
            await service.on_case_step(session=session, case=case, step=case.step, seq=case.last_event_seq,
                                       kb=api.ctx.kb, base_url="")

    api.run(replay)
    api.drain()
    assert len(receiver.accepted) == 6 and len(query(api, select(WebhookDelivery))) == 6


def test_failed_deliveries_are_retried_with_backoff(api: Api, receiver: WebhookReceiver) -> None:
    key = make_key(api, "app")
    subscribe(api, key, f"{receiver.url}/hook")
    receiver.state.fail_next = 2
    response = api.client.post("/open311/v2/subscription/test.json", headers=key.headers)
    assert response.status_code == 202
    delivery_id = response.json()["delivery_id"]

    def delivered() -> bool:
        return any(r.answered == 200 for r in receiver.received)

    deliver_until(api, delivered)
    assert [r.answered for r in receiver.received] == [503, 503, 200]
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1  # the same payload every time; only the timestamp and signature are fresh
    assert all(r.signed_by(key.secret) and r.headers["x-intake-delivery"] == str(delivery_id)
               for r in receiver.received)
    (delivery,) = query(api, select(WebhookDelivery))
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.attempts == 3
    attempts = query(api, select(DeliveryAttempt).order_by(DeliveryAttempt.id))
    assert [a.status_code for a in attempts] == [503, 503, 200]
    assert attempts[0].error == "receiver answered 503" and attempts[2].error is None


def test_deliveries_give_up_and_can_be_retried(api: Api, receiver: WebhookReceiver) -> None:
    key = make_key(api, "app")
    subscribe(api, key, f"{receiver.url}/hook")
    receiver.state.always_status = 500
    api.client.post("/open311/v2/subscription/test.json", headers=key.headers)

    def failed() -> bool:
        rows = query(api, select(WebhookDelivery))
        return bool(rows) and rows[0].status == DeliveryStatus.FAILED

    deliver_until(api, failed)
    assert len(receiver.received) == 4  # INTAKE_OPEN311_WEBHOOK_MAX_ATTEMPTS=4 in these tests
    (delivery,) = query(api, select(WebhookDelivery))
    receiver.state.always_status = None
    retried = api.post(f"/api/open311/deliveries/{delivery.id}/retry")
    assert retried.status_code == 200 and retried.json()["status"] == "pending"
    deliver_until(api, lambda: bool(receiver.accepted))
    assert query(api, select(WebhookDelivery))[0].status == DeliveryStatus.DELIVERED

    # A receiver refusing the message (4xx) is not retried.
    receiver.state.always_status = 410
    before = len(receiver.received)
    api.client.post("/open311/v2/subscription/test.json", headers=key.headers)
    api.drain()
    assert len(receiver.received) == before + 1
    newest = query(api, select(WebhookDelivery).order_by(WebhookDelivery.id.desc()))[0]
    assert newest.status == DeliveryStatus.FAILED and newest.last_status_code == 410


def test_rejections_reach_subscribers_and_unsubscribe_stops(api: Api, receiver: WebhookReceiver) -> None:
    key = make_key(api, "app")
    subscribe(api, key, f"{receiver.url}/hook")
    request_id = submit(api, key)
    (draft,) = query(api, select(DraftCase))
    api.post(f"/api/drafts/{draft.id}/reject", json={"reason": "重复上报"})
    api.run(sweep_once, api.ctx)
    api.drain()
    (post,) = receiver.accepted
    assert post.json["service_request_id"] == request_id and post.json["status"] == "closed"
    assert post.json["status_notes"] == "不予立案：重复上报"

    assert api.client.delete("/open311/v2/subscription.json", headers=key.headers).status_code == 204
    again = api.client.post("/open311/v2/subscription/test.json", headers=key.headers)
    assert again.status_code == 400 and again.json()[0]["description"] == "尚未设置 webhook_url"


def test_private_receivers_are_refused_by_default(tmp_path: Any, db_url: str) -> None:
    from fastapi.testclient import TestClient

    from core.app import create_app

    settings = make_settings(db_url, tmp_path)  # open311_webhook_allow_private stays False
    with TestClient(create_app(settings)) as client:
        api = Api(client)
        key = make_key(api, "app")
        for url in ("http://127.0.0.1:9/hook", "http://10.1.2.3/hook", "http://localhost/x"):
            response = client.put("/open311/v2/subscription.json", json={"webhook_url": url}, headers=key.headers)
            assert response.status_code == 400 and response.json()[0]["code"] == 400
        assert client.put("/open311/v2/subscription.json", json={"webhook_url": "ftp://example.com/x"},
                          headers=key.headers).status_code == 400
