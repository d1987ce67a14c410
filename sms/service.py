"""SMS notices and replies: one durable send per message, quiet hours, rate limits, opt-outs, receipts, replies.

Every SMS is a `SmsSend` row created in the transaction that asks for it and driven by outbox jobs:
`notice.sms` (a case notice), `sms.text` (a free text from another domain), `sms.send` (a send deferred by
quiet hours or a rate limit) and `sms.inbound` (a citizen's reply, accepted by a callback and handled here).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import phonenumbers
from sqlalchemy import exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import record
from core.cases.models import Case, Notification, NotificationStatus, Rating, Step
from core.cases.schemas import MAX_TEXT, DraftCreate, Reporter
from core.cases.service import create_draft, find_citizen, rate_case
from core.context import emit
from core.db import utcnow
from core.errors import Conflict, InvalidInput
from core.models import Channel, ContactKind, Direction, Message
from core.outbox import PermanentFailure, TemporaryFailure, enqueue
from core.phone import InvalidPhone, mask_phone, normalise_phone
from sms.client import (
    MAX_CHARS,
    Inbound,
    Lookup,
    Receipt,
    SendResult,
    SmsError,
    SmsMessage,
    SmsMisconfigured,
    SmsNotSent,
    SmsRejected,
    SmsSender,
    SmsThrottled,
    id_aliases,
    segments,
)
from sms.models import FINAL_STATUSES, SmsPart, SmsReceipt, SmsRecipient, SmsSend, SmsStatus
from sms.replies import FreeText, OptOut, RatingReply, classify, looks_like_report
from sms.templates import SmsTemplates, UnknownTemplate

if TYPE_CHECKING:
    from core.context import AppContext

log = logging.getLogger(__name__)

NOTICE_KIND = "notice.sms"
TEXT_KIND = "sms.text"
SEND_KIND = "sms.send"
INBOUND_KIND = "sms.inbound"

NOTIFICATION_ERRORS = 255
MISCONFIGURED_RETRY_SECONDS = 60.0  # how often SMS try again while the gateway refuses our credentials
RECHECK_SECONDS = 60.0
LOOKUP_ID_PREFIX = "out:"  # an id made up when a lookup found our message but not the gateway's id  # how often a lost answer is looked up while waiting for a receipt


class SmsTextTooLong(InvalidInput):
    """The text exceeds what one (long) SMS can carry."""

    error_id = "sms-too-long"
    message = "短信内容过长"


class NotAMobile(InvalidInput):
    """The number cannot receive SMS (a landline)."""

    error_id = "sms-not-mobile"
    message = "该号码不是手机号码，无法接收短信"


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A local-time window without non-urgent SMS (may wrap midnight, like 22:00-08:00)."""

    start: dt.time
    end: dt.time
    tz: ZoneInfo

    @classmethod
    def parse(cls, spec: str, *, tz: str) -> QuietHours | None:
        """Read "HH:MM-HH:MM"; an empty spec means no quiet hours."""
        spec = spec.strip()
        if not spec:
            return None
        try:
            first, second = spec.split("-")
            start = dt.time.fromisoformat(first.strip())
            end = dt.time.fromisoformat(second.strip())
        except ValueError as err:
            raise ValueError(f"INTAKE_SMS_QUIET_HOURS must look like 22:00-08:00, not {spec!r}") from err
        if start == end:
            return None
        return cls(start=start, end=end, tz=ZoneInfo(tz))

    def active(self, now: dt.datetime) -> bool:
        """Tell whether `now` falls in the window."""
        local = now.astimezone(self.tz).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def end_after(self, now: dt.datetime) -> dt.datetime:
        """Return the next end of the window after `now`, in UTC."""
        local = now.astimezone(self.tz)
        candidate = dt.datetime.combine(local.date(), self.end, self.tz)
        if candidate <= local:
            candidate = dt.datetime.combine(local.date() + dt.timedelta(days=1), self.end, self.tz)
        return candidate.astimezone(dt.UTC)


def is_mobile(e164: str) -> bool:
    """Tell whether a number can receive SMS (mobile, or a region where the two cannot be told apart)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    kind = phonenumbers.number_type(number)
    return kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


def gateway_reference(key: str) -> str:
    """Our reference towards the gateway: notice keys as they are, other keys hashed.

    Callers' keys may carry identifiers (a WeChat openid in a binding-code key); the reference travels to the
    gateway (OutId, SessionContext, Kannel's dlr-url), so it must say nothing about the citizen.
    """
    if re.fullmatch(r"notice-\d{1,20}", key):
        return key
    return "sms-" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _insert(session: AsyncSession) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


class SmsService:
    """Drives SMS sends through the configured gateway and turns receipts and replies into records."""

    def __init__(
        self,
        *,
        ctx: AppContext,
        sender: SmsSender,
        templates: SmsTemplates,
        quiet_hours: QuietHours | None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """Bind the gateway and the rules; `clock` is replaceable so quiet hours can be tested."""
        self.ctx = ctx
        self.sender = sender
        self.templates = templates
        # The shipped texts merged with the console's edits, rebuilt when the knowledge version changes.
        self._edited: tuple[int, SmsTemplates] | None = None
        self.quiet_hours = quiet_hours
        self.clock = clock
        settings = ctx.settings
        # An attempt younger than this may still be running in another worker: never start a second one.
        self.in_flight_seconds = max(settings.outbox_lease_seconds / 2, settings.sms_timeout_seconds + 2) + 1
        # Set while the gateway refuses our credentials, signature or templates (shown on /status).
        self.gateway_problem: str | None = None
        # SQLite has no SELECT … FOR UPDATE: one process (the only kind SQLite supports) serialises SMS state
        # changes itself, or a receipt and the gateway's answer could overwrite each other.
        self._sqlite_lock = asyncio.Lock() if settings.is_sqlite else None

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncSession]:
        """A unit of work that changes SMS state (rows are locked on PostgreSQL, the process lock on SQLite)."""
        if self._sqlite_lock is None:
            async with self.ctx.uow() as session:
                yield session
            return
        async with self._sqlite_lock, self.ctx.uow() as session:
            yield session

    # --- queueing ---

    async def queue_notification(self, notification_id: int) -> SmsSend | None:
        """Create the send of a case notice (once) and process it."""
        failure: str | None = None
        async with self._tx() as session:
            notification = await session.get(Notification, notification_id)
            if notification is None:
                raise PermanentFailure("notification vanished")
            key = f"notice-{notification.id}"
            send = await session.scalar(select(SmsSend).where(SmsSend.key == key))
            if send is None:
                if notification.status != NotificationStatus.QUEUED:
                    return None
                case = await session.get(Case, notification.case_id) if notification.case_id else None
                try:
                    send = await self._new_send(
                        session=session, key=key, to=notification.address, template=notification.template,
                        params=dict(notification.params), urgent=bool(case and case.urgent),
                        notification_id=notification.id)
                except UnknownTemplate:
                    failure = f"no SMS template {notification.template}"
                except InvalidInput as err:
                    failure = err.message
                if failure is not None:
                    # Recorded (committed) on the notice, then the job stops: no retry can fix the data.
                    notification.status = NotificationStatus.FAILED
                    notification.error = failure[:NOTIFICATION_ERRORS]
            send_id = send.id if send is not None else None
        if failure is not None or send_id is None:
            raise PermanentFailure(failure or "no SMS send")
        return await self.process(send_id)

    async def queue_text(
        self,
        *,
        session: AsyncSession,
        to: str,
        key: str,
        text: str | None = None,
        template: str | None = None,
        params: dict[str, Any] | None = None,
        urgent: bool = True,
        ignore_opt_out: bool = False,
    ) -> SmsSend:
        """Queue a free text or a template SMS in the caller's transaction (the same key queues it once)."""
        existing = await session.scalar(select(SmsSend).where(SmsSend.key == key))
        if existing is not None:
            return existing
        phone = normalise_phone(to, region=self.ctx.settings.default_region)
        if template is None:
            template, params = "text", {"content": text or ""}
        send = await self._new_send(session=session, key=key, to=phone, template=template, params=params or {},
                                    urgent=urgent, ignore_opt_out=ignore_opt_out)
        # New SMS to one number go out in the order they were asked for (deferred ones keep their own order).
        number_hash = hashlib.sha256(send.phone.encode()).hexdigest()[:24]
        await enqueue(session=session, kind=SEND_KIND, payload={"send_id": send.id},
                      idempotency_key=f"sms.send:{send.id}:0", ordering_key=f"sms-new:{number_hash}")
        return send

    async def _new_send(
        self, *, session: AsyncSession, key: str, to: str, template: str, params: dict[str, Any], urgent: bool,
        notification_id: int | None = None, ignore_opt_out: bool = False,
    ) -> SmsSend:
        if not is_mobile(to):
            raise NotAMobile(details={"to": mask_phone(to)})
        body = (await self._texts(session)).render(template, params)
        if len(body) > MAX_CHARS:
            raise SmsTextTooLong(details={"chars": len(body), "max": MAX_CHARS})
        send = SmsSend(key=key, reference=gateway_reference(key), notification_id=notification_id, phone=to,
                       template=template,
                       params=self.templates.provider_params(template, params), body=body, parts=segments(body),
                       urgent=urgent, ignore_opt_out=ignore_opt_out)
        session.add(send)
        await session.flush()
        return send

    async def _texts(self, session: AsyncSession) -> SmsTemplates:
        """The templates to render with: the file's, overlaid with the texts admins edited in the console.

        Provider parameters keep coming from the file: Aliyun/Tencent templates are registered with the
        provider, so only the text we log and send through text gateways can follow the console.
        """
        knowledge = self.ctx.knowledge
        if knowledge is None:
            return self.templates
        await self.ctx.fresh_knowledge(session)
        if self._edited is None or self._edited[0] != knowledge.version:
            edits = {name: str(data.get("text", "")) for name, data in knowledge.templates.items()
                     if not data.get("deleted") and data.get("text")}
            self._edited = (knowledge.version, self.templates.overlaid(edits))
        return self._edited[1]

    async def send_text_job(self, payload: dict[str, Any]) -> SmsSend | None:
        """Handle an `sms.text` job: {"to", "text" | "template" + "params", "key", optional "urgent"}."""
        try:
            async with self._tx() as session:
                send = await self.queue_text(
                    session=session, to=str(payload["to"]), key=str(payload["key"]),
                    text=payload.get("text"), template=payload.get("template"),
                    params=payload.get("params") or {},
                    # Free texts answer something the citizen just did (a binding code): urgent unless told.
                    urgent=bool(payload.get("urgent", True)))
                send_id = send.id
        except (KeyError, InvalidInput, UnknownTemplate) as err:
            raise PermanentFailure(f"bad sms.text job: {type(err).__name__}: {err}") from err
        return await self.process(send_id)

    # --- sending ---

    def message(self, send: SmsSend) -> SmsMessage:
        """The gateway's view of a send."""
        return SmsMessage(to=send.phone, text=send.body, template=send.template,
                          params={k: str(v) for k, v in send.params.items()}, idempotency_key=send.reference)

    async def process(self, send_id: int) -> SmsSend:
        """Send now, defer (quiet hours, rate limit), skip (opted out), or settle a lost answer; never twice."""
        now = self.clock()
        reconcile = False
        async with self._tx() as session:
            send = await session.get(SmsSend, send_id, with_for_update=True, populate_existing=True)
            if send is None:
                raise PermanentFailure("sms send vanished")
            if send.status in FINAL_STATUSES:
                return send
            recipient = await self._lock_recipient(session, send.phone)
            if send.not_before is not None and now < send.not_before - dt.timedelta(seconds=1):
                # Run early (a replayed job, or clocks apart between workers): keep the promised time.
                await self._schedule(session, send, recipient, until=send.not_before,
                                     reason=send.defer_reason or "deferred")
                return send
            if recipient.opted_out_at is not None and not send.ignore_opt_out:
                await self._set_final(session, send, SmsStatus.SKIPPED, error="opted out (退订)")
                return send
            if send.status == SmsStatus.SUBMITTING:
                started = send.attempt_started_at or now
                if (now - started).total_seconds() < self.in_flight_seconds:
                    # Maybe still running in another worker: look again once it must have ended.
                    await self._schedule(session, send, recipient, reason="in_flight",
                                         until=started + dt.timedelta(seconds=self.in_flight_seconds))
                    return send
                reconcile = True
            else:
                if not send.urgent and self.quiet_hours is not None and self.quiet_hours.active(now):
                    send.status = SmsStatus.PENDING
                    await self._schedule(session, send, recipient, until=self.quiet_hours.end_after(now),
                                         reason="quiet_hours")
                    return send
                until = await self._rate_limited_until(session, send, now)
                if until is not None:
                    await self._schedule(session, send, recipient, until=until, reason="rate_limit")
                    return send
                self._start_attempt(send, now)
            message = self.message(send)
            first_attempt = send.first_attempt_at or now
            attempt_started = send.attempt_started_at or now
        if reconcile:
            lookup = await self._lookup(message, since=first_attempt)
            if lookup.result is not None:
                log.info("sms %s: the lost attempt had reached %s", send_id, self.sender.name)
                return await self._accepted(send_id, lookup.result)
            grace_end = attempt_started + dt.timedelta(seconds=self.ctx.settings.sms_unknown_outcome_grace_seconds)
            async with self._tx() as session:
                send = await session.get(SmsSend, send_id, with_for_update=True, populate_existing=True)
                if send is None:
                    raise PermanentFailure("sms send vanished")
                if send.status != SmsStatus.SUBMITTING:
                    return send  # a receipt settled it meanwhile
                if not lookup.known and now < grace_end:
                    # A receipt may still prove the lost attempt went out; sending now could send twice.
                    recipient = await self._lock_recipient(session, send.phone)
                    await self._schedule(session, send, recipient, reason="outcome_unknown",
                                         until=min(grace_end, now + dt.timedelta(seconds=RECHECK_SECONDS)))
                    return send
                self._start_attempt(send, now)
        try:
            result = await self.sender.send(message)
        except SmsRejected as err:
            await self._finish(send_id, SmsStatus.FAILED, error=str(err))
            log.warning("sms %s to %s rejected: %s", send_id, mask_phone(message.to), err)
            raise PermanentFailure(str(err)) from err
        except SmsMisconfigured as err:
            # Every SMS would fail the same way: keep them all queued (without using up their attempts).
            self.gateway_problem = str(err)
            log.error("sms gateway %s refuses our configuration: %s", self.sender.name, err)
            return await self._not_sent(send_id, str(err), retry_after=MISCONFIGURED_RETRY_SECONDS,
                                        reason="gateway_config")
        except SmsThrottled as err:
            return await self._not_sent(send_id, str(err), retry_after=err.retry_after, reason="gateway_limit")
        except SmsNotSent as err:
            await self._not_sent(send_id, str(err))
            raise TemporaryFailure(str(err)) from err
        except SmsError as err:
            # SmsOutcomeUnknown (or an error we cannot place): it may have gone out; settle it before resending.
            return await self._unknown(send_id, str(err), started=now)
        self.gateway_problem = None
        return await self._accepted(send_id, result)

    async def _lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        try:
            return await self.sender.lookup(message, since=since)
        except SmsError as err:
            log.warning("sms lookup on %s failed: %s", self.sender.name, err)
            return Lookup()

    def _start_attempt(self, send: SmsSend, now: dt.datetime) -> None:
        send.status = SmsStatus.SUBMITTING
        send.attempts += 1
        send.attempt_started_at = now
        send.first_attempt_at = send.first_attempt_at or now
        send.sent_at = send.sent_at or now
        send.provider = self.sender.name

    async def _lock_recipient(self, session: AsyncSession, phone: str) -> SmsRecipient:
        """Return the number's row, created if new and locked (ON CONFLICT DO UPDATE locks it on PostgreSQL)."""
        insert = _insert(session)(SmsRecipient).values(phone=phone, created_at=utcnow())
        stmt = insert.on_conflict_do_update(index_elements=["phone"], set_={"phone": insert.excluded.phone})
        recipient: SmsRecipient | None = await session.scalar(
            stmt.returning(SmsRecipient), execution_options={"populate_existing": True})
        assert recipient is not None
        return recipient

    async def _rate_limited_until(self, session: AsyncSession, send: SmsSend, now: dt.datetime) -> dt.datetime | None:
        settings = self.ctx.settings
        day_ago = now - dt.timedelta(days=1)
        times = sorted(t for t in await session.scalars(
            select(SmsSend.sent_at).where(SmsSend.phone == send.phone, SmsSend.id != send.id,
                                          SmsSend.sent_at.is_not(None), SmsSend.sent_at > day_ago)) if t)
        waits: list[dt.datetime] = []
        if len(times) >= settings.sms_rate_per_day:
            waits.append(times[len(times) - settings.sms_rate_per_day] + dt.timedelta(days=1))
        hour = [t for t in times if t > now - dt.timedelta(hours=1)]
        if len(hour) >= settings.sms_rate_per_hour:
            waits.append(hour[len(hour) - settings.sms_rate_per_hour] + dt.timedelta(hours=1))
        return max(waits) + dt.timedelta(seconds=1) if waits else None

    async def _schedule(
        self, session: AsyncSession, send: SmsSend, recipient: SmsRecipient, *, until: dt.datetime, reason: str
    ) -> None:
        """Look at the send again at `until` (a new outbox job; the current one is done)."""
        send.not_before = until
        send.defer_reason = reason
        send.deferrals += 1
        # One ordering key per number keeps deferred SMS in order when the morning (or the window) comes.
        await enqueue(session=session, kind=SEND_KIND, payload={"send_id": send.id},
                      idempotency_key=f"sms.send:{send.id}:{send.deferrals}", ordering_key=f"sms:{recipient.id}",
                      not_before=until)
        log.info("sms %s to %s: next look at %s (%s)", send.id, mask_phone(send.phone), until.isoformat(), reason)

    async def _not_sent(
        self, send_id: int, error: str, *, retry_after: float | None = None, reason: str = "not_sent"
    ) -> SmsSend:
        now = self.clock()
        async with self._tx() as session:
            send = await session.get(SmsSend, send_id, with_for_update=True, populate_existing=True)
            if send is None:
                raise PermanentFailure("sms send vanished")
            if send.status != SmsStatus.SUBMITTING:
                return send
            send.status = SmsStatus.PENDING
            send.error = error[:255]
            if send.attempts <= 1:
                send.sent_at = None  # never reached the gateway: not counted against the number's limits
            if retry_after is not None:
                recipient = await self._lock_recipient(session, send.phone)
                await self._schedule(session, send, recipient, until=now + dt.timedelta(seconds=retry_after),
                                     reason=reason)
            return send

    async def _unknown(self, send_id: int, error: str, *, started: dt.datetime) -> SmsSend:
        async with self._tx() as session:
            send = await session.get(SmsSend, send_id, with_for_update=True, populate_existing=True)
            if send is None:
                raise PermanentFailure("sms send vanished")
            send.error = error[:255]
            log.warning("sms %s to %s: outcome unknown (%s)", send_id, mask_phone(send.phone), error)
            if send.status == SmsStatus.SUBMITTING:
                recipient = await self._lock_recipient(session, send.phone)
                await self._schedule(session, send, recipient, reason="outcome_unknown",
                                     until=started + dt.timedelta(seconds=self.in_flight_seconds))
            return send

    async def _accepted(self, send_id: int, result: SendResult) -> SmsSend:
        now = self.clock()
        async with self._tx() as session:
            send = await session.get(SmsSend, send_id, with_for_update=True, populate_existing=True)
            if send is None:
                raise PermanentFailure("sms send vanished")
            if send.status in (SmsStatus.PENDING, SmsStatus.SUBMITTING):
                send.status = SmsStatus.SUBMITTED
            send.provider = self.sender.name
            send.provider_message_id = result.provider_message_id[:128]
            send.parts = result.parts or send.parts
            send.accepted_at = send.accepted_at or now
            send.sent_at = send.sent_at or now
            send.error = None
            ids = result.part_ids or (result.provider_message_id,)
            part_status = send.status if send.status in (SmsStatus.DELIVERED, SmsStatus.FAILED) \
                else SmsStatus.SUBMITTED
            await session.execute(_insert(session)(SmsPart).values([
                {"send_id": send.id, "provider": self.sender.name, "provider_message_id": message_id[:128],
                 "seq": seq, "status": part_status} for seq, message_id in enumerate(ids, start=1)
            ]).on_conflict_do_nothing(index_elements=["provider", "provider_message_id"]))
            await self._mirror(session, send)
            # Receipts that overtook the gateway's answer were kept; apply them now.
            spellings = {alias for message_id in ids for alias in (message_id, *id_aliases(message_id))}
            early = list(await session.scalars(select(SmsReceipt).where(
                SmsReceipt.applied.is_(False), SmsReceipt.provider == self.sender.name,
                or_(SmsReceipt.provider_message_id.in_(spellings), SmsReceipt.reference == send.reference),
            ).order_by(SmsReceipt.id)))
            for receipt in early:
                await self._apply_receipt(session, send, receipt)
            log.info("sms %s (%s) to %s accepted by %s", send.id, send.template, mask_phone(send.phone),
                     self.sender.name)
            return send

    async def _finish(self, send_id: int, status: SmsStatus, *, error: str | None = None) -> None:
        async with self._tx() as session:
            send = await session.get(SmsSend, send_id, with_for_update=True, populate_existing=True)
            if send is not None and send.status not in FINAL_STATUSES:
                await self._set_final(session, send, status, error=error)

    async def _set_final(self, session: AsyncSession, send: SmsSend, status: SmsStatus, *, error: str | None) -> None:
        send.status = status
        send.error = error[:255] if error else None
        if status == SmsStatus.DELIVERED:
            send.delivered_at = send.delivered_at or self.clock()
        await self._mirror(session, send)

    async def _mirror(self, session: AsyncSession, send: SmsSend) -> None:
        """Copy a send's state onto its case notification (what the console and API show)."""
        if send.notification_id is None:
            return
        notification = await session.get(Notification, send.notification_id, with_for_update=True)
        if notification is None:
            return
        notification.body = send.body
        if send.provider_message_id:
            notification.provider_message_id = send.provider_message_id
        if send.status in (SmsStatus.SUBMITTED, SmsStatus.DELIVERED) and notification.sent_at is None:
            notification.sent_at = send.accepted_at or self.clock()
        if send.status == SmsStatus.SUBMITTED and notification.status == NotificationStatus.QUEUED:
            notification.status = NotificationStatus.SENT
        elif send.status == SmsStatus.DELIVERED:
            notification.status = NotificationStatus.DELIVERED
            notification.delivered_at = send.delivered_at
            notification.error = None
        elif send.status == SmsStatus.FAILED:
            notification.status = NotificationStatus.FAILED
            notification.error = (send.error or "failed")[:NOTIFICATION_ERRORS]
        elif send.status == SmsStatus.SKIPPED:
            notification.status = NotificationStatus.SKIPPED
            notification.error = (send.error or "skipped")[:NOTIFICATION_ERRORS]

    # --- receipts ---

    async def receipt(self, receipt: Receipt) -> None:
        """Record a delivery report once, and apply it to its send (now, or when the send is recorded)."""
        outcome = "accepted" if receipt.delivered is None else "delivered" if receipt.delivered else "failed"
        message_id = (receipt.provider_message_id or receipt.reference or "")[:128]
        if not message_id:
            return
        async with self._tx() as session:
            send: SmsSend | None = None
            if receipt.reference:
                send = await session.scalar(select(SmsSend).where(SmsSend.reference == receipt.reference)
                                            .with_for_update())
            if send is None:
                spellings = [message_id, *receipt.aliases, *id_aliases(message_id)]
                part = await session.scalar(select(SmsPart).where(
                    SmsPart.provider == receipt.provider, SmsPart.provider_message_id.in_(spellings)))
                if part is not None:
                    send = await session.get(SmsSend, part.send_id, with_for_update=True)
            stmt = _insert(session)(SmsReceipt).values(
                provider=receipt.provider, provider_message_id=message_id, reference=receipt.reference,
                send_id=send.id if send else None, outcome=outcome, code=receipt.code[:32], reported_at=receipt.at,
                received_at=utcnow(), applied=False,
            ).on_conflict_do_nothing(index_elements=["provider", "provider_message_id", "outcome"])
            receipt_id = await session.scalar(stmt.returning(SmsReceipt.id))
            if receipt_id is None:
                return  # a repeated receipt
            if send is None:
                log.info("sms receipt from %s for an unknown message kept for later", receipt.provider)
                return
            row = await session.get(SmsReceipt, receipt_id)
            assert row is not None
            await self._apply_receipt(session, send, row)

    async def _apply_receipt(self, session: AsyncSession, send: SmsSend, receipt: SmsReceipt) -> None:
        receipt.applied = True
        receipt.send_id = send.id
        if send.status in (SmsStatus.DELIVERED, SmsStatus.FAILED, SmsStatus.SKIPPED):
            return
        spellings = [receipt.provider_message_id, *id_aliases(receipt.provider_message_id)]
        parts = list(await session.scalars(select(SmsPart).where(SmsPart.send_id == send.id)))
        matched = [p for p in parts if p.provider_message_id in spellings]
        if not matched and receipt.reference == send.reference:
            # Matched by our key (OutId, dlr-url): the receipt covers the whole message.
            matched = parts
            if len(parts) == 1 and parts[0].provider_message_id.startswith(LOOKUP_ID_PREFIX):
                # The lookup that settled a lost answer had no gateway id; the receipt brings it.
                parts[0].provider_message_id = receipt.provider_message_id
                send.provider_message_id = receipt.provider_message_id
        if send.status in (SmsStatus.PENDING, SmsStatus.SUBMITTING):
            # A receipt proves the gateway took it, whatever became of our request's answer.
            send.status = SmsStatus.SUBMITTED
            send.accepted_at = send.accepted_at or receipt.received_at
            send.sent_at = send.sent_at or receipt.received_at
            send.provider = receipt.provider
        if receipt.outcome == "accepted":
            await self._mirror(session, send)
            return
        if receipt.outcome == "failed":
            for part in matched:
                part.status, part.code = SmsStatus.FAILED, receipt.code
            await self._set_final(session, send, SmsStatus.FAILED, error=f"receipt {receipt.code}")
            return
        for part in matched:
            part.status, part.code = SmsStatus.DELIVERED, receipt.code
        await session.flush()
        open_parts = await session.scalar(select(exists().where(
            SmsPart.send_id == send.id, SmsPart.status != SmsStatus.DELIVERED)))
        if not open_parts:
            send.delivered_at = receipt.reported_at or receipt.received_at
            await self._set_final(session, send, SmsStatus.DELIVERED, error=None)

    # --- replies ---

    async def inbound(self, message: Inbound) -> None:
        """Accept an incoming SMS durably (the callback answers at once; the outbox handles it)."""
        payload = {
            "provider": message.provider, "external_id": message.external_id, "sender": message.sender,
            "text": message.text[:MAX_TEXT], "received_at": message.received_at.isoformat(),
        }
        sender_hash = hashlib.sha256(message.sender.encode()).hexdigest()[:24]
        async with self._tx() as session:
            await enqueue(session=session, kind=INBOUND_KIND, payload=payload,
                          idempotency_key=f"sms.in:{message.provider}:{message.external_id}"[:128],
                          ordering_key=f"sms-in:{sender_hash}")

    async def handle_inbound(self, payload: dict[str, Any]) -> Message | None:
        """Turn a reply into an opt-out, a rating of the case awaiting one, or a message (and draft) for the seats."""
        external_id = f"{payload['provider']}:{payload['external_id']}"[:128]
        text = str(payload.get("text") or "").strip()
        try:
            phone: str | None = normalise_phone(str(payload["sender"]), region=self.ctx.settings.default_region)
        except InvalidPhone:
            phone = None
        reply = classify(text) if text else FreeText("")
        async with self._tx() as session:
            seen = await session.scalar(select(Message).where(
                Message.channel == Channel.SMS, Message.direction == Direction.INBOUND,
                Message.external_id == external_id))
            if seen is not None:
                return seen
            citizen = await find_citizen(session=session, kind=ContactKind.PHONE, value=phone) if phone else None
            message = Message(channel=Channel.SMS, direction=Direction.INBOUND, external_id=external_id,
                              citizen_id=citizen.id if citizen else None, kind="text", body=text)
            if isinstance(reply, OptOut) and phone:
                await self.opt_out(session=session, phone=phone, via="reply")
                message.kind, message.seen_by_operator = "opt_out", True
                session.add(message)
                try:
                    await self.queue_text(session=session, to=phone, key=f"optout:{external_id}"[:128],
                                          template="opted_out", urgent=True, ignore_opt_out=True)
                except (UnknownTemplate, InvalidInput) as err:
                    # The opt-out itself must stick even when no confirmation can be sent.
                    log.warning("sms opt-out confirmation not sent: %s", err)
                log.info("sms opt-out from %s", mask_phone(phone))
                return message
            if isinstance(reply, RatingReply) and citizen is not None:
                case = await self._case_awaiting_rating(session, citizen.id)
                if case is not None:
                    try:
                        async with session.begin_nested():
                            await rate_case(session=session, case=case, score=reply.score, channel=Channel.SMS,
                                            comment=reply.comment)
                    except Conflict as err:
                        log.info("sms rating for case %s not taken: %s", case.id, err.error_id)
                    else:
                        message.kind, message.case_id, message.seen_by_operator = "rating", case.id, True
                        session.add(message)
                        log.info("sms rating %s (score %s) for case %s", reply.choice, reply.score, case.number)
                        return message
            message.case_id = await self._latest_case_id(session, citizen.id) if citizen else None
            session.add(message)
            await session.flush()
            draft_id: int | None = None
            if isinstance(reply, FreeText) and looks_like_report(text, case_type_names=self._case_type_names()):
                draft = await create_draft(
                    session=session, kb=self.ctx.kb, region=self.ctx.settings.default_region,
                    data=DraftCreate(channel=Channel.SMS, text=text[:MAX_TEXT], source_key=f"sms:{external_id}"[:128],
                                     reporter=Reporter(phone=phone) if phone else None))
                message.draft_id = draft_id = draft.id
            emit(session, "message.received", {
                "message_id": message.id, "channel": Channel.SMS.value, "from": mask_phone(phone or ""),
                "case_id": message.case_id, "draft_id": draft_id})
            return message

    def _case_type_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.ctx.kb.taxonomy.types.values() if len(t.name) >= 2)

    async def _case_awaiting_rating(self, session: AsyncSession, citizen_id: int) -> Case | None:
        cutoff = self.clock() - dt.timedelta(days=self.ctx.settings.sms_rating_window_days)
        rated = exists().where(Rating.case_id == Case.id)
        return await session.scalar(
            select(Case).where(Case.citizen_id == citizen_id, Case.step == Step.CLOSE, Case.rating_score.is_(None),
                               ~rated, Case.closed_at.is_not(None), Case.closed_at >= cutoff)
            .order_by(Case.closed_at.desc(), Case.id.desc()).limit(1))

    async def _latest_case_id(self, session: AsyncSession, citizen_id: int) -> int | None:
        cutoff = self.clock() - dt.timedelta(days=self.ctx.settings.sms_rating_window_days)
        return await session.scalar(
            select(Case.id).where(Case.citizen_id == citizen_id, Case.updated_at >= cutoff)
            .order_by(Case.updated_at.desc(), Case.id.desc()).limit(1))

    # --- opt-outs ---

    async def opt_out(self, *, session: AsyncSession, phone: str, via: str) -> SmsRecipient:
        """Stop every SMS to a number (queued ones are skipped when their turn comes)."""
        recipient = await self._lock_recipient(session, phone)
        if recipient.opted_out_at is None:
            recipient.opted_out_at = utcnow()
            recipient.opt_out_via = via
            await record(session=session, operator=None, actor="sms", action="sms.opt_out", target_type="sms",
                         target_id=str(recipient.id), details={"phone": mask_phone(phone), "via": via})
        return recipient

    async def opt_in(self, *, session: AsyncSession, phone: str, via: str) -> SmsRecipient:
        """Allow SMS to a number again (the citizen asked the hotline)."""
        recipient = await self._lock_recipient(session, phone)
        if recipient.opted_out_at is not None:
            recipient.opted_out_at = None
            recipient.opt_out_via = None
            await record(session=session, operator=None, actor="sms", action="sms.opt_in", target_type="sms",
                         target_id=str(recipient.id), details={"phone": mask_phone(phone), "via": via})
        return recipient
