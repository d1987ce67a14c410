"""The SMS outbox on the embedded file gateway: notices, quiet hours, rate limits, opt-outs, replies, errors."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable

from sqlalchemy import select

from core.cases.models import Case, DraftCase, Notification, Rating
from core.models import AuditEntry, Message, OutboxStatus
from sms.models import SmsRecipient, SmsSend, SmsStatus
from sms.service import INBOUND_KIND, SEND_KIND
from tests.conftest import Api
from tests.sms.helpers import (
    PHONE,
    accepted_case,
    beijing,
    close_case,
    drain_all,
    jobs,
    make_due,
    one,
    rows,
    sends,
    set_clock,
)


def keys(api: Api) -> list[str]:
    """The callers' keys of the SMS in the file log (the log holds the gateway references)."""
    by_reference = {s.reference: s.key for s in sends(api)}
    return [by_reference[line["idempotency_key"]] for line in log_lines(api)]


def log_lines(api: Api) -> list[dict[str, str]]:
    path = api.ctx.settings.sms_outbox_path
    assert path is not None
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def reply(api: Api, text: str, *, sender: str = "8613812345678", message_id: str | None = None) -> None:
    """A citizen's SMS as a gateway hands it over, then handled by the outbox."""
    from sms.client import Inbound

    api.run(api.ctx.sms.inbound, Inbound(provider="file", external_id=message_id or f"mo-{text}-{sender}",
                                         sender=sender, text=text))
    api.drain()


def test_notice_is_sent_once_with_its_send_record(make_api: Callable[..., Api]) -> None:
    api = make_api()
    number = accepted_case(api)
    send = one(api, select(SmsSend))
    assert send.status == SmsStatus.SUBMITTED and send.template == "accepted" and send.parts == 1
    assert send.body.startswith("【示例城管】") and number in send.body
    notification = one(api, select(Notification))
    assert notification.status == "sent" and notification.provider_message_id == send.key == "notice-1"
    assert notification.body == send.body
    lines = log_lines(api)
    assert [(line["to"], line["idempotency_key"]) for line in lines] == [(PHONE, "notice-1")]
    # Replaying the job changes nothing.
    api.run(api.ctx.sms.queue_notification, notification.id)
    assert len(log_lines(api)) == 1 and len(sends(api)) == 1


def test_notice_text_edited_in_the_console_is_what_goes_out(make_api: Callable[..., Api]) -> None:
    api = make_api()
    edited = api.client.post("/admin/templates/accepted", follow_redirects=False, data={
        "csrf_token": api.csrf, "text": "您反映的{{ case_type }}已受理，编号{{ case_number | short(8) }}。"})
    assert edited.status_code == 303
    accepted_case(api)
    send = one(api, select(SmsSend))
    assert send.body.startswith("【示例城管】您反映的") and "已受理，编号" in send.body
    # Template gateways keep the variables registered with the provider (the shipped file's).
    assert set(send.params) == set(api.ctx.sms.templates.variables("accepted"))


def test_quiet_hours_queue_non_urgent_notices_to_the_morning(make_api: Callable[..., Api]) -> None:
    api = make_api(sms_quiet_hours_enabled=True)
    set_clock(api, beijing(23, 30))
    accepted_case(api)
    send = sends(api)[0]
    morning = beijing(8, 0, days=1)
    assert send.status == SmsStatus.PENDING and send.defer_reason == "quiet_hours" and send.not_before == morning
    deferred = jobs(api, SEND_KIND)
    assert len(deferred) == 1 and deferred[0].status == OutboxStatus.PENDING
    assert deferred[0].next_attempt_at == morning
    assert log_lines(api) == []
    # An urgent case is told at once, quiet hours or not.
    accepted_case(api, phone="139 0000 1111", urgent=True)
    assert [line["to"] for line in log_lines(api)] == ["+8613900001111"]
    # At 08:00 the queued notice goes out.
    set_clock(api, morning + dt.timedelta(seconds=5))
    make_due(api)
    api.drain()
    assert [line["to"] for line in log_lines(api)] == ["+8613900001111", PHONE]
    assert one(api, select(Notification.status).where(Notification.address == PHONE)) == "sent"


def test_quiet_hours_window_wraps_midnight_and_respects_the_zone(make_api: Callable[..., Api]) -> None:
    api = make_api(sms_quiet_hours_enabled=True)
    quiet = api.ctx.sms.quiet_hours
    assert quiet is not None
    assert quiet.active(beijing(22, 0)) and quiet.active(beijing(3, 0)) and quiet.active(beijing(7, 59))
    assert not quiet.active(beijing(8, 0)) and not quiet.active(beijing(21, 59))
    assert quiet.end_after(beijing(3, 0)) == beijing(8, 0)
    assert quiet.end_after(beijing(22, 30)) == beijing(8, 0, days=1)


def test_file_gateway_ignores_quiet_hours_by_default(make_api: Callable[..., Api]) -> None:
    api = make_api()
    assert api.ctx.sms.quiet_hours is None


def test_per_number_hourly_limit_defers_and_then_sends(make_api: Callable[..., Api]) -> None:
    api = make_api(sms_rate_per_hour=2)
    noon = beijing(12, 0, days=1)  # tomorrow: deferred jobs must lie in the outbox's (real) future
    set_clock(api, noon)

    async def queue(i: int) -> None:
        async with api.ctx.uow() as session:
            await api.ctx.sms.queue_text(session=session, to=PHONE, key=f"t{i}", text=f"第{i}条")

    for i in range(3):
        api.run(queue, i)
    api.drain()
    assert keys(api) == ["t0", "t1"]
    third = sends(api)[2]
    assert third.status == SmsStatus.PENDING and third.defer_reason == "rate_limit"
    assert third.not_before is not None and noon + dt.timedelta(hours=1) <= third.not_before
    assert third.not_before <= noon + dt.timedelta(hours=1, seconds=2)
    # Another number is not held up.
    api.run(_queue_to, api, "+8613900001111", "other")
    api.drain()
    assert keys(api)[-1] == "other"
    set_clock(api, noon + dt.timedelta(hours=1, seconds=5))
    make_due(api)
    api.drain()
    assert keys(api) == ["t0", "t1", "other", "t2"]


def test_per_number_daily_limit(make_api: Callable[..., Api]) -> None:
    api = make_api(sms_rate_per_hour=100, sms_rate_per_day=3)
    start = beijing(9, 0)
    for i in range(4):
        set_clock(api, start + dt.timedelta(hours=2 * i))
        api.run(_queue_to, api, PHONE, f"d{i}")
        api.drain()
    assert len(log_lines(api)) == 3
    last = sends(api)[3]
    assert last.defer_reason == "rate_limit" and last.not_before is not None
    assert last.not_before >= start + dt.timedelta(days=1)


async def _queue_to(api: Api, to: str, key: str) -> None:
    async with api.ctx.uow() as session:
        await api.ctx.sms.queue_text(session=session, to=to, key=key, text="测试")


def test_opt_out_reply_stops_notices_and_is_confirmed(make_api: Callable[..., Api]) -> None:
    api = make_api()
    accepted_case(api)
    reply(api, "TD")
    recipient = one(api, select(SmsRecipient))
    assert recipient.opted_out_at is not None and recipient.opt_out_via == "reply"
    assert "您已退订" in log_lines(api)[-1]["text"]
    audit = one(api, select(AuditEntry).where(AuditEntry.action == "sms.opt_out"))
    assert "13812345678" not in json.dumps(audit.details) and audit.details["phone"] == "138****5678"
    message = one(api, select(Message))
    assert message.kind == "opt_out" and message.seen_by_operator
    sent_before = len(log_lines(api))
    number = accepted_case(api)  # a second report by the same citizen
    assert len(log_lines(api)) == sent_before
    notice = one(api, select(Notification).where(Notification.params["case_number"].as_string() == number))
    assert notice.status == "skipped" and "退订" in (notice.error or "")
    # The citizen asks the hotline to get SMS again.
    async def _opt_in() -> None:
        async with api.ctx.uow() as session:
            await api.ctx.sms.opt_in(session=session, phone=PHONE, via="operator")

    api.run(_opt_in)
    api.run(_queue_to, api, PHONE, "after-opt-in")
    api.drain()
    assert keys(api)[-1] == "after-opt-in"


def test_opt_out_skips_sms_already_queued(make_api: Callable[..., Api]) -> None:
    api = make_api(sms_quiet_hours_enabled=True)
    set_clock(api, beijing(23, 0))
    accepted_case(api)  # deferred to the morning
    reply(api, "退订")
    set_clock(api, beijing(8, 1, days=1))
    make_due(api)
    api.drain()
    assert [line["text"] for line in log_lines(api) if "您已退订" not in line["text"]] == []
    assert sends(api)[0].status == SmsStatus.SKIPPED


def test_reply_digit_rates_the_case_awaiting_rating(make_api: Callable[..., Api]) -> None:
    api = make_api()
    older = accepted_case(api)
    close_case(api, older)
    other_citizen = accepted_case(api, phone="139 0000 1111")
    close_case(api, other_citizen)
    reply(api, "2")
    ratings = rows(api, select(Rating))
    assert len(ratings) == 1 and ratings[0].score == 3 and ratings[0].channel == "sms"
    case = one(api, select(Case).where(Case.number == older))
    assert ratings[0].case_id == case.id
    message = one(api, select(Message))
    assert message.kind == "rating" and message.case_id == case.id
    api.drain()
    assert api.get(f"/api/cases/{older}").json()["rating_score"] == 3
    assert api.get(f"/api/cases/{other_citizen}").json()["rating_score"] is None
    # The thank-you notice follows the rating.
    assert "感谢您对案件" in log_lines(api)[-1]["text"]


def test_reply_picks_the_latest_case_awaiting_rating(make_api: Callable[..., Api]) -> None:
    api = make_api()
    first = accepted_case(api)
    second = accepted_case(api, text="解放路上的路灯不亮了")
    close_case(api, first)
    close_case(api, second)
    reply(api, "不满意，还是不亮")
    rating = one(api, select(Rating))
    assert rating.score == 1 and rating.comment == "还是不亮"
    assert rating.case_id == one(api, select(Case.id).where(Case.number == second))


def test_rating_without_a_case_awaiting_one_goes_to_the_seats(make_api: Callable[..., Api]) -> None:
    api = make_api()
    accepted_case(api)  # open, not closed
    reply(api, "1")
    assert rows(api, select(Rating)) == []
    message = one(api, select(Message))
    assert message.kind == "text" and not message.seen_by_operator and message.case_id is not None


def test_problem_reply_becomes_a_draft_and_chat_becomes_a_message(make_api: Callable[..., Api]) -> None:
    api = make_api()
    reply(api, "谢谢你们", sender="13900002222")
    reply(api, "解放路口的路灯坏了好几天了，晚上很黑", sender="13900002222")
    messages = rows(api, select(Message).order_by(Message.id))
    assert [m.kind for m in messages] == ["text", "text"]
    assert messages[0].draft_id is None and messages[1].draft_id is not None
    draft = one(api, select(DraftCase))
    assert draft.channel == "sms" and draft.raw_text.startswith("解放路口的路灯")
    inbox = api.get("/api/drafts").json()
    assert inbox[0]["reporter_phone_masked"] == "139****2222"


def test_a_repeated_reply_is_handled_once(make_api: Callable[..., Api]) -> None:
    api = make_api()
    for _ in range(3):
        reply(api, "小区门口垃圾堆积很久了", sender="13900002222", message_id="same-id")
    assert len(rows(api, select(Message))) == 1
    assert len(rows(api, select(DraftCase))) == 1
    assert len(jobs(api, INBOUND_KIND)) == 1


def test_permanent_errors_stop_at_once(make_api: Callable[..., Api]) -> None:
    api = make_api()

    async def queue_job(payload: dict[str, object], key: str) -> None:
        from core.outbox import enqueue

        async with api.ctx.uow() as session:
            await enqueue(session=session, kind="sms.text", payload=payload, idempotency_key=key)

    api.run(queue_job, {"to": "+86 10 6552 9988", "text": "座机", "key": "landline"}, "j1")
    api.run(queue_job, {"to": PHONE, "text": "长" * 600, "key": "too-long"}, "j2")
    api.run(queue_job, {"to": "12", "text": "x", "key": "bad"}, "j3")
    api.drain()
    dead = jobs(api, "sms.text")
    assert [j.status for j in dead] == [OutboxStatus.DEAD] * 3
    assert all(j.attempts == 1 for j in dead)
    assert log_lines(api) == []


def test_landline_citizens_get_no_sms_channel(make_api: Callable[..., Api]) -> None:
    api = make_api()
    accepted_case(api, phone="010 6552 9988")
    assert rows(api, select(Notification)) == []
    assert log_lines(api) == []


def test_sms_text_jobs_from_other_domains(make_api: Callable[..., Api]) -> None:
    api = make_api(sms_quiet_hours_enabled=True)
    set_clock(api, beijing(23, 45))

    async def queue_job() -> None:
        from core.outbox import enqueue

        async with api.ctx.uow() as session:
            await enqueue(session=session, kind="sms.text", idempotency_key="bind-1",
                          payload={"to": PHONE, "text": "您的绑定验证码是 482913，10分钟内有效。",
                                   "key": "wechat-bind:oAbCdEfGhIjKlMnOpQrStUvWxYz0:42"})

    api.run(queue_job)
    drain_all(api)
    # A binding code answers what the citizen just did: urgent, so quiet hours do not hold it back.
    assert log_lines(api)[0]["text"] == "【示例城管】您的绑定验证码是 482913，10分钟内有效。"
    # The gateway sees a hash of the caller's key, never the openid in it.
    reference = log_lines(api)[0]["idempotency_key"]
    assert reference.startswith("sms-") and "oAbC" not in reference
    assert keys(api) == ["wechat-bind:oAbCdEfGhIjKlMnOpQrStUvWxYz0:42"]
