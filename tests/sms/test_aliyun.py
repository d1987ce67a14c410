"""Aliyun 短信服务 against a local fake of its HTTP API: signing, templates, receipts, replies, faults."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from core.cases.models import Notification, Rating
from core.models import OutboxStatus
from sms.models import SmsReceipt, SmsStatus
from tests.conftest import Api
from tests.fakes.aliyun_sms import FakeAliyunSms
from tests.sms.conftest import CALLBACK_TOKEN
from tests.sms.helpers import accepted_case, close_case, jobs, make_due, one, rows, sends, set_clock

TEMPLATES = {"accepted": "SMS_100001", "dispatched": "SMS_100002", "closed": "SMS_100003", "rated": "SMS_100004",
             "opted_out": "SMS_100005"}


@pytest.fixture
def aliyun() -> Iterator[FakeAliyunSms]:
    fake = FakeAliyunSms(templates=set(TEMPLATES.values())).start()
    yield fake
    fake.stop()


def aliyun_api(make_api: Callable[..., Api], fake: FakeAliyunSms, **overrides: object) -> Api:
    values: dict[str, object] = {
        "sms_provider": "aliyun", "sms_aliyun_endpoint": fake.url, "sms_aliyun_access_key_id": "LTAI-test",
        "sms_aliyun_access_key_secret": "aliyun-secret", "sms_aliyun_templates": TEMPLATES,
        "sms_quiet_hours_enabled": False,
    }
    values.update(overrides)
    return make_api(**values)


def push(api: Api, kind: str, body: object, *, token: str = CALLBACK_TOKEN) -> dict[str, object]:
    response = api.client.post(f"/sms/aliyun/{kind}/{token}", content=json.dumps(body, ensure_ascii=False),
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


def test_notice_receipt_and_reply_through_aliyun(make_api: Callable[..., Api], aliyun: FakeAliyunSms) -> None:
    api = aliyun_api(make_api, aliyun)
    number = accepted_case(api)
    [sent] = aliyun.state.sent
    assert aliyun.state.signature_failures == 0
    assert (sent.phone, sent.sign_name, sent.template_code) == ("13812345678", "示例城管", "SMS_100001")
    assert list(sent.params) == ["case_type", "case_number"] and sent.params["case_number"] == number
    assert sent.out_id == "notice-1"
    notification = one(api, select(Notification))
    assert notification.status == "sent" and notification.provider_message_id == sent.biz_id

    assert push(api, "report", aliyun.report_body(sent)) == {"code": 0, "msg": "成功"}
    push(api, "report", aliyun.report_body(sent))  # Aliyun repeats receipts
    notification = one(api, select(Notification))
    assert notification.status == "delivered" and notification.delivered_at is not None
    assert len(rows(api, select(SmsReceipt))) == 1

    close_case(api, number)
    push(api, "up", aliyun.uplink_body("13812345678", "满意", sequence_id=9001))
    push(api, "up", aliyun.uplink_body("13812345678", "满意", sequence_id=9001))  # and replies
    api.drain()
    rating = one(api, select(Rating))
    assert rating.score == 5 and rating.channel == "sms"
    assert [s.template_code for s in aliyun.state.sent][-1] == "SMS_100004"  # the thank-you


def test_failed_receipt_marks_the_notice_failed(make_api: Callable[..., Api], aliyun: FakeAliyunSms) -> None:
    api = aliyun_api(make_api, aliyun)
    accepted_case(api)
    push(api, "report", aliyun.report_body(aliyun.state.sent[0], success=False, err_code="MK:0001"))
    notification = one(api, select(Notification))
    assert notification.status == "failed" and "MK:0001" in (notification.error or "")


def test_lost_answer_is_settled_by_query_not_by_sending_again(
    make_api: Callable[..., Api], aliyun: FakeAliyunSms
) -> None:
    api = aliyun_api(make_api, aliyun, sms_timeout_seconds=0.5)
    aliyun.state.slow_after_accept = 1.5  # Aliyun accepts, then our client times out
    accepted_case(api)
    assert len(aliyun.state.sent) == 1
    send = sends(api)[0]
    assert send.status == SmsStatus.SUBMITTING and "answer lost" in (send.error or "")
    aliyun.state.slow_after_accept = 0
    # Retried within the in-flight window: nothing happens.
    make_due(api)
    api.step()
    assert len(aliyun.state.sent) == 1 and "QuerySendDetails" not in aliyun.state.calls
    # Later the retry asks QuerySendDetails, finds our OutId and does not send again.
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=api.ctx.sms.in_flight_seconds + 1)
    set_clock(api, later)
    make_due(api)
    api.drain()
    assert "QuerySendDetails" in aliyun.state.calls
    assert len(aliyun.state.sent) == 1
    assert sends(api)[0].status == SmsStatus.SUBMITTED
    # The receipt (matched by OutId) completes it and brings the BizId.
    push(api, "report", aliyun.report_body(aliyun.state.sent[0]))
    notification = one(api, select(Notification))
    assert notification.status == "delivered" and notification.provider_message_id == aliyun.state.sent[0].biz_id


def test_blacklisted_number_fails_for_good(make_api: Callable[..., Api], aliyun: FakeAliyunSms) -> None:
    api = aliyun_api(make_api, aliyun)
    aliyun.state.blacklisted.add("13812345678")
    accepted_case(api)
    notice_jobs = jobs(api, "notice.sms")
    assert [(j.status, j.attempts) for j in notice_jobs] == [(OutboxStatus.DEAD, 1)]
    notification = one(api, select(Notification))
    assert notification.status == "failed" and "isv.BLACK_KEY_CONTROL_LIMIT" in (notification.error or "")


def test_platform_rate_limit_defers_the_notice(make_api: Callable[..., Api], aliyun: FakeAliyunSms) -> None:
    api = aliyun_api(make_api, aliyun)
    aliyun.state.throttled.add("13812345678")
    accepted_case(api)
    send = sends(api)[0]
    assert send.status == SmsStatus.PENDING and send.defer_reason == "gateway_limit"
    assert send.not_before is not None and send.not_before > dt.datetime.now(dt.UTC) + dt.timedelta(minutes=50)
    assert send.sent_at is None
    assert aliyun.state.sent == []


def test_wrong_secret_is_a_configuration_problem_not_a_lost_message(
    make_api: Callable[..., Api], aliyun: FakeAliyunSms
) -> None:
    api = aliyun_api(make_api, aliyun, sms_aliyun_access_key_secret="wrong")
    accepted_case(api)
    assert aliyun.state.signature_failures >= 1 and aliyun.state.sent == []
    send = sends(api)[0]
    assert send.status == SmsStatus.PENDING and send.defer_reason == "gateway_config" and send.attempts == 1
    # The message waits (a minute per try) without using up outbox attempts until the key is fixed.
    assert [j.status for j in jobs(api, "sms.send")] == [OutboxStatus.PENDING]
    status = api.get("/status").json()["components"]["sms_gateway"]
    assert status["status"] == "fail" and "SignatureDoesNotMatch" in status["detail"]


def test_missing_templates_leave_sms_queued_and_say_so(make_api: Callable[..., Api], aliyun: FakeAliyunSms) -> None:
    api = aliyun_api(make_api, aliyun, sms_aliyun_templates={"accepted": "SMS_100001"})
    status = api.get("/status").json()["components"]["sms_gateway"]
    assert status["status"] == "fail" and "INTAKE_SMS_ALIYUN_TEMPLATES" in status["detail"]
    accepted_case(api)
    assert sends(api)[0].status == SmsStatus.PENDING and aliyun.state.sent == []


def test_callbacks_are_guarded(make_api: Callable[..., Api], aliyun: FakeAliyunSms) -> None:
    api = aliyun_api(make_api, aliyun)
    wrong = api.client.post("/sms/aliyun/report/not-the-token", json=[])
    assert wrong.status_code == 404
    malformed = api.client.post(f"/sms/aliyun/report/{CALLBACK_TOKEN}", content=b"{not json",
                                headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.json()["error"]["id"] == "sms-bad-callback"
    incomplete = api.client.post(f"/sms/aliyun/up/{CALLBACK_TOKEN}", json=[{"phone_number": "13812345678"}])
    assert incomplete.status_code == 400
