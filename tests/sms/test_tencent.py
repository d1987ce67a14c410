"""Tencent Cloud SMS against a local fake of its HTTP API: TC3 signing, positional variables, callbacks, faults."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from core.cases.models import Notification, Rating
from core.models import OutboxStatus
from sms.models import SmsStatus
from tests.conftest import Api
from tests.fakes.tencent_sms import FakeTencentSms
from tests.sms.conftest import CALLBACK_TOKEN
from tests.sms.helpers import PHONE, accepted_case, close_case, jobs, make_due, one, sends, set_clock

TEMPLATES = {"accepted": "200001", "dispatched": "200002", "closed": "200003", "rated": "200004",
             "opted_out": "200005"}


@pytest.fixture
def tencent() -> Iterator[FakeTencentSms]:
    fake = FakeTencentSms(templates=set(TEMPLATES.values())).start()
    yield fake
    fake.stop()


def tencent_api(make_api: Callable[..., Api], fake: FakeTencentSms, **overrides: object) -> Api:
    values: dict[str, object] = {
        "sms_provider": "tencent", "sms_tencent_endpoint": fake.url, "sms_tencent_secret_id": "AKIDtest",
        "sms_tencent_secret_key": "tencent-secret", "sms_tencent_sdk_app_id": "1400000001",
        "sms_tencent_templates": TEMPLATES, "sms_quiet_hours_enabled": False,
    }
    values.update(overrides)
    return make_api(**values)


def test_notice_status_and_reply_through_tencent(make_api: Callable[..., Api], tencent: FakeTencentSms) -> None:
    api = tencent_api(make_api, tencent)
    number = accepted_case(api)
    [sent] = tencent.state.sent
    assert tencent.state.signature_failures == 0
    assert (sent.phone, sent.template_id, sent.sign_name, sent.session_context) == (PHONE, "200001", "示例城管",
                                                                                   "notice-1")
    assert sent.params[1] == number and len(sent.params) == 2  # {1} case type, {2} case number
    assert one(api, select(Notification)).provider_message_id == sent.serial_no

    response = api.client.post(f"/sms/tencent/status/{CALLBACK_TOKEN}", json=tencent.status_body(sent))
    assert response.status_code == 200 and response.json() == {"result": 0, "errmsg": "OK"}
    assert one(api, select(Notification)).status == "delivered"

    close_case(api, number)
    response = api.client.post(f"/sms/tencent/reply/{CALLBACK_TOKEN}", json=tencent.reply_body(PHONE, "基本满意"))
    assert response.status_code == 200 and response.json() == {"result": 0, "errmsg": "OK"}
    api.drain()
    assert one(api, select(Rating)).score == 3


def test_lost_answer_is_found_in_pulled_statuses(make_api: Callable[..., Api], tencent: FakeTencentSms) -> None:
    api = tencent_api(make_api, tencent, sms_timeout_seconds=0.5)
    tencent.state.slow_after_accept = 1.5
    accepted_case(api)
    tencent.state.slow_after_accept = 0
    assert sends(api)[0].status == SmsStatus.SUBMITTING
    set_clock(api, dt.datetime.now(dt.UTC) + dt.timedelta(seconds=api.ctx.sms.in_flight_seconds + 1))
    make_due(api)
    api.drain()
    assert "PullSmsSendStatusByPhoneNumber" in tencent.state.calls
    assert len(tencent.state.sent) == 1
    assert sends(api)[0].status == SmsStatus.SUBMITTED
    assert sends(api)[0].provider_message_id == tencent.state.sent[0].serial_no


def test_daily_limit_defers_and_blacklist_fails(make_api: Callable[..., Api], tencent: FakeTencentSms) -> None:
    api = tencent_api(make_api, tencent)
    tencent.state.daily_limited.add(PHONE)
    tencent.state.blacklisted.add("+8613900001111")
    accepted_case(api)
    accepted_case(api, phone="139 0000 1111")
    first, second = sends(api)
    assert first.status == SmsStatus.PENDING and first.defer_reason == "gateway_limit"
    assert first.not_before is not None and first.not_before > dt.datetime.now(dt.UTC) + dt.timedelta(hours=20)
    assert second.status == SmsStatus.FAILED and "PhoneNumberInBlacklist" in (second.error or "")
    assert [j.status for j in jobs(api, "notice.sms")] == [OutboxStatus.DONE, OutboxStatus.DEAD]


def test_bad_key_is_reported_and_nothing_is_lost(make_api: Callable[..., Api], tencent: FakeTencentSms) -> None:
    api = tencent_api(make_api, tencent, sms_tencent_secret_key="wrong")
    accepted_case(api)
    assert tencent.state.signature_failures >= 1 and tencent.state.sent == []
    status = api.get("/status").json()["components"]["sms_gateway"]
    assert status["status"] == "fail" and "AuthFailure" in status["detail"]
    assert sends(api)[0].status == SmsStatus.PENDING
