"""Case notices over WeChat: a template message first, a customer-service text inside the 48-hour
window second, and an SMS (queued as a new notification) when neither reaches the citizen.

The fallback to SMS is a new `Notification` row on channel sms plus a `notice.sms` outbox job, written
in one transaction with the WeChat row marked failed; the WeChat job then ends normally, because the
notice did go out. Only when no channel at all reaches the citizen does the job fail for good
(PermanentFailure), so that it shows among the dead jobs for a supervisor to look at.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import string
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from core.cases.models import Notification, NotificationStatus
from core.db import utcnow
from core.models import Channel, Citizen, CitizenContact, ContactKind
from core.outbox import PermanentFailure, TemporaryFailure, enqueue
from core.phone import mask_openid
from kb.service import LOCAL_TZ
from wechat import texts
from wechat.client import WeChatRejected, WeChatUnavailable
from wechat.models import Conversation
from wechat.schemas import TemplateConfig

if TYPE_CHECKING:
    from wechat.service import WeChatBot

log = logging.getLogger(__name__)

OUTBOX_KIND = "notice.wechat"
SMS_KIND = "notice.sms"
WINDOW = dt.timedelta(hours=48)
# Category-template field limits (WeChat answers 47003 beyond them); unknown types are capped at 20.
FIELD_LIMITS = {"thing": 20, "character_string": 32, "phrase": 5, "number": 32, "letter": 32, "name": 10,
                "phone_number": 17, "car_number": 8, "amount": 32, "time": 32, "date": 32, "symbol": 5}


class WeChatNoticeChannel:
    """Reaches citizens whose WeChat openid is linked (unfollowing unlinks it)."""

    channel = Channel.WECHAT
    outbox_kind = OUTBOX_KIND

    def address_for(self, citizen: Citizen) -> str | None:
        """Return the citizen's openid."""
        return next((c.value for c in citizen.contacts if c.kind == ContactKind.WECHAT), None)


def field_type(name: str) -> str:
    """Return the type of a template field from its key (thing2 → thing, character_string1 → character_string)."""
    return re.sub(r"\d+$", "", name)


def fit_field(name: str, value: str) -> str:
    """Cut a field value to what its category-template type accepts."""
    kind = field_type(name)
    limit = FIELD_LIMITS.get(kind, 20)
    value = " ".join(value.split())
    if kind in ("character_string", "letter", "number"):
        value = "".join(ch for ch in value if ch.isascii())
    if len(value) > limit:
        value = value[: limit - 1] + "…" if kind in ("thing", "name") else value[:limit]
    return value or "-"


def notice_params(notification: Notification) -> dict[str, str]:
    """The notice's parameters plus a few derived ones, every value a string."""
    params = {k: "" if v is None else str(v) for k, v in (notification.params or {}).items()}
    params.setdefault("case_number", "")
    params["time"] = (notification.created_at or utcnow()).astimezone(LOCAL_TZ).strftime("%Y年%m月%d日 %H:%M")
    params["deadline_text"] = f"，预计{params['deadline']}前办结" if params.get("deadline") else ""
    return params


def render_template(config: TemplateConfig, params: dict[str, str]) -> dict[str, dict[str, str]]:
    """Fill the configured field mapping and respect each field's length limit."""
    values: defaultdict[str, str] = defaultdict(str, params)
    formatter = string.Formatter()
    return {name: {"value": fit_field(name, formatter.vformat(pattern, (), values))}
            for name, pattern in config.fields.items()}


def render_text(template: str, params: dict[str, str]) -> str:
    """The customer-service text of a notice."""
    pattern = texts.NOTICE_TEXTS.get(template)
    if pattern is None:
        return f"案件{params.get('case_number', '')}有新进展：{params.get('step', '')}。"
    return string.Formatter().vformat(pattern, (), defaultdict(str, params))


async def deliver(*, bot: WeChatBot, notification_id: int, templates: dict[str, TemplateConfig]) -> None:
    """Send one notice; see the module docstring for the fallback order."""
    async with bot.ctx.sessions() as session:
        notification = await session.get(Notification, notification_id)
        if notification is None:
            raise PermanentFailure("notification vanished")
        if notification.status in (NotificationStatus.SENT, NotificationStatus.DELIVERED):
            return
        openid = notification.address
        linked = await session.scalar(select(CitizenContact.id).where(
            CitizenContact.kind == ContactKind.WECHAT, CitizenContact.value == openid))
        last_message = await session.scalar(select(Conversation.last_message_at).where(Conversation.openid == openid))
    params = notice_params(notification)
    errors: list[str] = []
    if bot.api is None:
        raise TemporaryFailure("INTAKE_WECHAT_APP_SECRET not set: WeChat notices wait")
    if linked is None:
        errors.append("openid unlinked (unfollowed)")
    else:
        config = templates.get(notification.template)
        if config is not None and config.template_id:
            data = render_template(config, params)
            try:
                msgid = await bot.api.send_template(openid, config.template_id, data, url=config.url,
                                                    client_msg_id=f"notice-{notification.id}")
            except WeChatUnavailable as err:
                raise TemporaryFailure(str(err)) from err
            except WeChatRejected as err:
                errors.append(f"template: {err}")
            else:
                body = " / ".join(f"{k}={v['value']}" for k, v in data.items())
                await _finish(bot, notification_id, NotificationStatus.SENT, body=body, provider_id=msgid)
                if notification.template == "closed" and _in_window(last_message):
                    await _invite_rating(bot, openid, params)
                log.info("wechat template %s sent to %s", notification.template, mask_openid(openid))
                return
        else:
            errors.append(f"no template configured for {notification.template}")
        if _in_window(last_message):
            text = render_text(notification.template, params)
            try:
                await bot.api.send_text(openid, text)
            except WeChatUnavailable as err:
                raise TemporaryFailure(str(err)) from err
            except WeChatRejected as err:
                errors.append(f"customer-service: {err}")
            else:
                await _finish(bot, notification_id, NotificationStatus.SENT, body=text, provider_id=None)
                log.info("wechat notice %s sent to %s as a customer-service message", notification.template,
                         mask_openid(openid))
                return
        else:
            errors.append("no message from the citizen in the last 48 h")
    await _fall_back_to_sms(bot, notification_id, "; ".join(errors))


def _in_window(last_message: dt.datetime | None) -> bool:
    return last_message is not None and utcnow() - last_message < WINDOW - dt.timedelta(minutes=5)


async def _invite_rating(bot: WeChatBot, openid: str, params: dict[str, str]) -> None:
    """Template messages carry no free text any more: ask for the rating in a customer-service message."""
    assert bot.api is not None
    try:
        await bot.api.send_text(openid, texts.RATE_INVITE.format(case_number=params.get("case_number", "")))
    except (WeChatRejected, WeChatUnavailable) as err:
        log.info("rating invitation to %s not sent: %s", mask_openid(openid), err)


async def _finish(bot: WeChatBot, notification_id: int, status: NotificationStatus, *, body: str,
                  provider_id: str | None, error: str | None = None) -> None:
    async with bot.ctx.uow() as session:
        notification = await session.get(Notification, notification_id)
        if notification is None:
            return
        notification.status = status
        notification.body = body[:2000]
        notification.provider_message_id = provider_id or None
        notification.error = error
        notification.sent_at = utcnow()


async def _fall_back_to_sms(bot: WeChatBot, notification_id: int, reason: str) -> None:
    """Queue the same notice as SMS when the citizen has a phone; otherwise fail for good."""
    async with bot.ctx.uow() as session:
        notification = await session.get(Notification, notification_id)
        if notification is None:
            raise PermanentFailure("notification vanished")
        phone = None
        if notification.citizen_id is not None:
            phone = await session.scalar(select(CitizenContact.value).where(
                CitizenContact.citizen_id == notification.citizen_id, CitizenContact.kind == ContactKind.PHONE)
                .order_by(CitizenContact.verified.desc(), CitizenContact.id))
        notification.status = NotificationStatus.FAILED
        notification.error = f"wechat: {reason}"[:1000]
        if phone is None:
            log.warning("wechat notice %s not delivered and no SMS fallback: %s", notification_id, reason)
            failed = True
        else:
            sms = await _sms_copy(session, notification, phone)
            notification.error = f"wechat: {reason}; fell back to SMS notification {sms.id}"[:1000]
            log.info("wechat notice %s fell back to SMS notification %s: %s", notification_id, sms.id, reason)
            failed = False
    if failed:
        raise PermanentFailure(f"no channel reached the citizen: {reason}")


async def _sms_copy(session: Any, notification: Notification, phone: str) -> Notification:
    key = f"{notification.dedupe_key}:sms"[:128]
    existing: Notification | None = await session.scalar(select(Notification).where(Notification.dedupe_key == key))
    if existing is not None:
        return existing
    sms = Notification(dedupe_key=key, case_id=notification.case_id, citizen_id=notification.citizen_id,
                       channel=Channel.SMS, address=phone, template=notification.template, step=notification.step,
                       params=dict(notification.params or {}))
    session.add(sms)
    await session.flush()
    await enqueue(session=session, kind=SMS_KIND, payload={"notification_id": sms.id},
                  idempotency_key=f"notice:{sms.id}", ordering_key=f"notice:{notification.citizen_id}")
    return sms
