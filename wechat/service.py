"""The WeChat bot: answer every callback within WeChat's 5 seconds from the persistent per-openid
conversation, turn 我要上报 into draft cases, and do the slow work (downloads, classification,
late replies) in outbox jobs.

Each message is one transaction: lock the conversation row (upsert … RETURNING, which also takes
SQLite's write lock first), answer a redelivery from the row's recent replies, run the step, write
the row back under a version check. Several processes and restarts therefore see one conversation,
and a message delivered three times is handled once and answered three times alike.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import logging
import random
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import lazyload

from core.audit import record
from core.cases import service as cases
from core.cases.models import (
    STEP_LABELS,
    Case,
    CaseEvent,
    DraftCase,
    DraftStatus,
    Notification,
    NotificationStatus,
    PointsEntry,
    Rating,
    Step,
)
from core.cases.schemas import DraftCreate, Location, MediaItem, Reporter
from core.context import emit
from core.db import Base, utcnow
from core.errors import AppError, Conflict
from core.models import Channel, Citizen, CitizenContact, ContactKind, Direction, Message
from core.outbox import PermanentFailure, TemporaryFailure, enqueue
from core.phone import InvalidPhone, mask_openid, mask_phone, normalise_phone
from core.registry import import_all_models
from kb.service import LOCAL_TZ
from wechat import assist, texts
from wechat.client import (
    CallbackCodec,
    Inbound,
    Opened,
    ReplayedNonce,
    WeChatApi,
    WeChatRejected,
    WeChatUnavailable,
)
from wechat.models import REPORT_STEPS, ConversationStep, MediaStatus, SeenNonce, WeChatMedia
from wechat.models import Conversation as ConversationRow
from wechat.storage import EXTENSIONS, MediaStorage, sniff_type
from wechat.tokens import dialect_insert

if TYPE_CHECKING:
    from core.context import AppContext

log = logging.getLogger(__name__)

MEDIA_KIND = "wechat.media"
CLASSIFY_KIND = "wechat.classify"
REPLY_KIND = "wechat.reply"
FORGET_KIND = "wechat.forget"
MEDIA_URL = "/wechat/media/{id}"
# Redeliveries come within ~15 s; keep replies a little longer, and never many.
RECENT_SECONDS = 120
RECENT_MAX = 30
MAX_VOICES = 5
HERE_FRESH = dt.timedelta(minutes=10)
BIND_RESEND = dt.timedelta(seconds=60)
BIND_PER_DAY = 5
BIND_ATTEMPTS = 5

QUERY_RE = re.compile(r"^(?:查询|查|进度|查进度)\s*[:：]?\s*([A-Za-z]{0,3}\d{6,16})$")
RATE_RE = re.compile(r"^(?:评价|打分|评分)\s*(?:([A-Za-z]{0,3}\d{6,16})\s*)?(?:[:：]?\s*([1-5])\s*分?)?$")
BIND_RE = re.compile(r"^(?:绑定|绑定手机|绑定手机号|绑定手机号码|绑定电话)\s*[:：]?\s*(\+?[\d\s-]{7,20})?$")
PHONE_RE = re.compile(r"^\+?[\d\s-]{7,20}$")
CODE_RE = re.compile(r"^\d{4,8}$")
TABLE = cast(Table, ConversationRow.__table__)
MEDIA_TABLE = cast(Table, WeChatMedia.__table__)


@dataclass(frozen=True, slots=True)
class CallbackResult:
    """What the callback endpoint answers: a (possibly encrypted) XML reply, or `success`."""

    body: str
    media_type: str = "application/xml"


SUCCESS = CallbackResult("success", "text/plain")


class VersionConflict(Exception):
    """The conversation row changed under us (only possible without row locks): run the turn again."""


@dataclass(slots=True)
class ConvState:
    """The conversation row as one turn reads and rewrites it."""

    openid: str
    citizen_id: int | None
    step: ConversationStep
    version: int
    data: dict[str, Any]
    recent: list[list[Any]]
    step_expires_at: dt.datetime | None
    last_message_at: dt.datetime | None

    @property
    def report(self) -> dict[str, Any]:
        """The report being collected."""
        report: dict[str, Any] = self.data.setdefault("report", {})
        return report


@dataclass(slots=True)
class _Tracker:
    """Shared between the callback and its processing task: did the callback stop waiting?"""

    gave_up: bool = False


def normalise_text(text: str) -> str:
    """Normalise a typed command: full-width to half-width, trailing punctuation and spaces dropped."""
    value = unicodedata.normalize("NFKC", text).strip()
    value = value.strip("。.!！~～、,，")
    return value.lower() if value.isascii() else value


def _code_hash(secret: str, openid: str, phone: str, code: str) -> str:
    return hmac.new(secret.encode(), f"{openid}|{phone}|{code}".encode(), hashlib.sha256).hexdigest()


def _retryable(err: BaseException) -> bool:
    if isinstance(err, VersionConflict):
        return True
    if isinstance(err, DBAPIError):
        orig = err.orig
        text = str(orig).lower()
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        return "locked" in text or "deadlock" in text or sqlstate in ("40001", "40P01")
    return False


def _local(moment: dt.datetime) -> str:
    return moment.astimezone(LOCAL_TZ).strftime("%m月%d日")


class WeChatBot:
    """The official-account bot of one app process (stored on ctx.wechat)."""

    def __init__(self, *, ctx: AppContext, codec: CallbackCodec, api: WeChatApi | None, storage: MediaStorage,
                 suggester: assist.Suggester | None) -> None:
        """Wire the bot; `api` is None without an AppSecret (replies work, downloads and notices wait)."""
        self.ctx = ctx
        self.settings = ctx.settings
        self.codec = codec
        self.api = api
        self.storage = storage
        self.suggester = suggester
        self._tasks: set[asyncio.Task[Any]] = set()
        self.warmed = False  # the article index and the optional classifier are loaded
        # Turns beyond the connection pool would only queue inside it and time out after 30 s under a
        # burst; waiting here instead loses nothing (a late turn still runs and replies by message).
        self._slots = asyncio.Semaphore(4 if self.settings.is_sqlite else max(2, self.settings.db_pool_size - 2))

    # --- the callback ---------------------------------------------------------------------------

    def verify(self, params: Mapping[str, str]) -> str:
        """Answer WeChat's URL verification."""
        return self.codec.verify_url(params)

    async def handle(self, *, params: Mapping[str, str], body: bytes, started: float) -> CallbackResult:
        """Verify, decrypt, dedupe, run one conversation step and answer before the reply budget ends."""
        opened = self.codec.open(body, params)
        message = opened.message
        if message.kind == "unknown":
            log.info("ignored wechat message of unknown type %r from %s", message.raw_type, mask_openid(message.openid))
            return SUCCESS
        nonce = None if opened.encrypted else (f"{params.get('timestamp')}:{opened.nonce}"[:96],
                                               hashlib.sha256(body).hexdigest())
        tracker = _Tracker()
        task = asyncio.create_task(self._process(message, nonce, tracker))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        loop = asyncio.get_running_loop()
        remaining = self.settings.wechat_reply_budget_seconds - (loop.time() - started)
        done, _ = await asyncio.wait({task}, timeout=max(0.05, remaining))
        if task not in done:
            # Decided on the event loop, atomically with the task's own check after commit.
            tracker.gave_up = True
            log.warning("wechat reply to %s not ready within %.1f s: answered success, the reply will follow "
                        "as a customer-service message", mask_openid(message.openid),
                        self.settings.wechat_reply_budget_seconds)
            return SUCCESS
        try:
            reply = task.result()
        except AppError:
            raise
        except Exception:
            log.exception("wechat message from %s failed", mask_openid(message.openid))
            reply = texts.BUSY
        if not reply:
            return SUCCESS
        return self.render(opened, reply)

    def render(self, opened: Opened, text: str) -> CallbackResult:
        """Render a passive text reply."""
        return CallbackResult(self.codec.render_text(opened, text))

    async def _process(self, message: Inbound, nonce: tuple[str, str] | None, tracker: _Tracker) -> str | None:
        """Run the turn (retrying lock conflicts); a reply the callback no longer waits for is queued."""
        try:
            async with self._slots:
                for attempt in range(5):
                    try:
                        reply = await self._turn(message, nonce)
                        break
                    except Exception as err:
                        if attempt == 4 or not _retryable(err):
                            raise
                        await asyncio.sleep(random.uniform(0.005, 0.02) * 2**attempt)  # noqa: S311 - jitter
                if tracker.gave_up and reply:
                    async with self.ctx.uow() as session:
                        await enqueue(session=session, kind=REPLY_KIND,
                                      payload={"openid": message.openid, "text": reply},
                                      idempotency_key=f"wechat-reply:{message.openid}:{message.dedupe_key}"[:128],
                                      ordering_key=f"wechat:{message.openid}"[:64])
            return reply
        except Exception:
            if not tracker.gave_up:
                raise
            log.exception("late wechat message from %s failed", mask_openid(message.openid))
            return None

    async def _turn(self, message: Inbound, nonce: tuple[str, str] | None) -> str | None:
        now = utcnow()
        async with self.ctx.uow() as session:
            if nonce is not None:
                await _check_nonce(session, key=nonce[0], body_sha=nonce[1], now=now)
            conv = await lock_conversation(session=session, openid=message.openid, now=now)
            key = message.dedupe_key
            for entry in conv.recent:
                if entry[0] == key:
                    log.info("wechat redelivery %s from %s answered from the stored reply", key,
                             mask_openid(message.openid))
                    reply: str | None = entry[2]
                    return reply
            dialogue = Dialogue(bot=self, session=session, conv=conv, msg=message, now=now)
            reply = await dialogue.run()
            cutoff = now.timestamp() - RECENT_SECONDS
            conv.recent = [e for e in conv.recent if e[1] >= cutoff][-(RECENT_MAX - 1):] + [
                [key, now.timestamp(), reply]]
            if message.kind != "event":
                conv.last_message_at = now
            await save_conversation(session=session, conv=conv, now=now)
            return reply

    async def close(self) -> None:
        """Let turns still running after their callback answered finish (bounded)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)


async def _check_nonce(session: AsyncSession, *, key: str, body_sha: str, now: dt.datetime) -> None:
    """Plaintext mode: a (timestamp, nonce) may only ever sign one body."""
    stmt = dialect_insert(session, SeenNonce.__table__).values(key=key, body_sha=body_sha, created_at=now)
    inserted = await session.scalar(stmt.on_conflict_do_nothing(index_elements=["key"]).returning(SeenNonce.key))
    if inserted is None:
        seen = await session.scalar(select(SeenNonce.body_sha).where(SeenNonce.key == key))
        if seen != body_sha:
            raise ReplayedNonce()


@lru_cache(maxsize=4)
def _lock_statement(dialect: str) -> Any:
    """The upsert that creates or row-locks a conversation, built once per dialect (hot path)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    c = TABLE.c
    stmt = insert(TABLE).values(
        openid=bindparam("p_openid", type_=c.openid.type), step=ConversationStep.IDLE, version=0,
        data=bindparam("p_empty", type_=c.data.type), recent=bindparam("p_none", type_=c.recent.type),
        created_at=bindparam("p_now", type_=c.created_at.type), updated_at=bindparam("p_now2", type_=c.updated_at.type))
    # DO UPDATE (not DO NOTHING) so the row comes back locked: FOR UPDATE on PostgreSQL, the write lock on SQLite.
    return stmt.on_conflict_do_update(index_elements=["openid"], set_={"updated_at": stmt.excluded.updated_at}).returning(
        c.citizen_id, c.step, c.version, c.data, c.recent, c.step_expires_at, c.last_message_at)


_SAVE_STATEMENT = (
    update(TABLE)
    .where(TABLE.c.openid == bindparam("k_openid"), TABLE.c.version == bindparam("k_version"))
    .values(step=bindparam("p_step"), version=bindparam("p_version"), data=bindparam("p_data"),
            recent=bindparam("p_recent"), citizen_id=bindparam("p_citizen"), step_expires_at=bindparam("p_expires"),
            last_message_at=bindparam("p_last"), updated_at=bindparam("p_now"))
)


async def lock_conversation(*, session: AsyncSession, openid: str, now: dt.datetime) -> ConvState:
    """Create or lock the openid's conversation row in one statement and return it."""
    stmt = _lock_statement(session.get_bind().dialect.name)
    row = (await session.execute(stmt, {"p_openid": openid, "p_empty": {}, "p_none": [], "p_now": now,
                                        "p_now2": now})).one()
    return ConvState(openid=openid, citizen_id=row.citizen_id, step=ConversationStep(row.step), version=row.version,
                     data=dict(row.data or {}), recent=list(row.recent or []), step_expires_at=row.step_expires_at,
                     last_message_at=row.last_message_at)


async def save_conversation(*, session: AsyncSession, conv: ConvState, now: dt.datetime) -> None:
    """Write the conversation back; the version check catches a writer we did not lock out."""
    result = await session.execute(_SAVE_STATEMENT, {
        "k_openid": conv.openid, "k_version": conv.version, "p_step": conv.step, "p_version": conv.version + 1,
        "p_data": conv.data, "p_recent": conv.recent, "p_citizen": conv.citizen_id,
        "p_expires": conv.step_expires_at, "p_last": conv.last_message_at, "p_now": now})
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise VersionConflict(conv.openid)
    conv.version += 1


@dataclass(slots=True)
class Dialogue:
    """One turn of the conversation: the message, the state, and what to answer."""

    bot: WeChatBot
    session: AsyncSession
    conv: ConvState
    msg: Inbound
    now: dt.datetime
    notes: list[str] = field(default_factory=list)

    @property
    def settings(self) -> Any:
        """The app settings."""
        return self.bot.settings

    @property
    def hotline(self) -> str:
        """The hotline number for hand-offs."""
        return str(self.settings.wechat_hotline)

    @property
    def limit(self) -> int:
        """Maximum photos per report."""
        return int(self.settings.wechat_max_photos)

    def _say(self, text: str) -> str:
        return "\n".join([*self.notes, text]) if self.notes else text

    async def run(self) -> str | None:
        """Dispatch the message by kind and step."""
        msg = self.msg
        if msg.kind == "event":
            return await self._event()
        if self.conv.step in REPORT_STEPS and self.conv.step_expires_at and self.conv.step_expires_at < self.now:
            self._reset()
            self.notes.append(texts.EXPIRED.format(minutes=self.settings.wechat_conversation_timeout_minutes))
        if self.conv.step in (ConversationStep.BIND_CODE, ConversationStep.BIND_PHONE) and self._bind_expired():
            self._set_step(ConversationStep.IDLE)
        if msg.kind == "text":
            return self._say(await self._text(msg.content))
        if msg.kind == "voice":
            if msg.recognition.strip():
                return self._say(await self._text(msg.recognition, voice=True))
            if self.conv.step == ConversationStep.DESCRIBE:
                await self._add_voice()
            return self._say(texts.VOICE_NOT_RECOGNISED)
        if msg.kind == "image":
            return self._say(await self._image())
        if msg.kind == "location":
            return self._say(await self._location_message())
        if msg.kind in ("video", "shortvideo"):
            return self._say(texts.VIDEO_NOT_SUPPORTED)
        return self._say(texts.LINK_NOT_SUPPORTED)

    # --- state helpers ---------------------------------------------------------------------------

    def _set_step(self, step: ConversationStep) -> None:
        self.conv.step = step
        if step in REPORT_STEPS:
            self.conv.step_expires_at = self.now + dt.timedelta(minutes=self.settings.wechat_conversation_timeout_minutes)
        elif step in (ConversationStep.BIND_PHONE, ConversationStep.BIND_CODE, ConversationStep.RATING_COMMENT):
            self.conv.step_expires_at = self.now + dt.timedelta(minutes=self.settings.wechat_bind_code_ttl_minutes)
        else:
            self.conv.step_expires_at = None

    def _reset(self) -> None:
        self.conv.data.pop("report", None)
        self.conv.data.pop("bind", None)
        self.conv.data.pop("rating_case", None)
        self._set_step(ConversationStep.IDLE)

    def _bind_expired(self) -> bool:
        return bool(self.conv.step_expires_at and self.conv.step_expires_at < self.now)

    def _start_report(self) -> None:
        self.conv.data["report"] = {"photos": [], "voices": [], "started_at": self.now.isoformat()}
        self._set_step(ConversationStep.DESCRIBE)

    def _here(self) -> dict[str, Any] | None:
        here = self.conv.data.get("here")
        if not isinstance(here, dict):
            return None
        if self.now.timestamp() - float(here.get("at", 0)) > HERE_FRESH.total_seconds():
            return None
        return here

    async def _citizen_id(self, *, create: bool) -> int | None:
        if self.conv.citizen_id is not None:
            return self.conv.citizen_id
        citizen: Citizen | None
        if create:
            citizen = await cases.get_or_create_citizen(session=self.session, openid=self.conv.openid)
        else:
            citizen = await cases.find_citizen(session=self.session, kind=ContactKind.WECHAT, value=self.conv.openid)
        self.conv.citizen_id = citizen.id if citizen else None
        return self.conv.citizen_id

    # --- text ------------------------------------------------------------------------------------

    async def _text(self, raw: str, *, voice: bool = False) -> str:
        text = normalise_text(raw)
        step = self.conv.step
        if text in texts.CANCEL_WORDS:
            return self._cancel()
        if step in REPORT_STEPS:
            return await self._report_text(raw.strip(), text, voice=voice)
        if step == ConversationStep.BIND_PHONE:
            return await self._bind_start(raw)
        if step == ConversationStep.BIND_CODE:
            if CODE_RE.match(text):
                return await self._bind_verify(text)
            again = BIND_RE.match(text)
            if (again and again.group(1)) or PHONE_RE.match(text):
                # A new number (or the same one again) while a code is pending: rate-limited resend.
                return await self._bind_start(again.group(1) if again and again.group(1) else raw)
            self._reset()
        if step == ConversationStep.RATING_COMMENT:
            if text in texts.DONE_WORDS:
                self._reset()
                return texts.COMMENT_THANKS
            if not self._is_command(text):
                return await self._rating_comment(raw.strip())
            self._reset()
        return await self._idle_text(raw.strip(), text)

    def _is_command(self, text: str) -> bool:
        return (text in texts.REPORT_WORDS or text in texts.HELP_WORDS or text in texts.MY_CASES_WORDS
                or text in texts.POINTS_WORDS or bool(QUERY_RE.match(text)) or bool(RATE_RE.match(text))
                or bool(BIND_RE.match(text)) or text in texts.FAQ_WORDS)

    def _cancel(self) -> str:
        step = self.conv.step
        self._reset()
        if step in REPORT_STEPS:
            return texts.CANCELLED
        if step in (ConversationStep.BIND_PHONE, ConversationStep.BIND_CODE):
            return texts.BIND_CANCELLED
        if step == ConversationStep.RATING_COMMENT:
            return texts.COMMENT_THANKS
        return texts.NOTHING_TO_CANCEL

    async def _idle_text(self, raw: str, text: str) -> str:
        if text in texts.REPORT_WORDS:
            self._start_report()
            return texts.PROMPT_DESCRIBE
        if text in texts.HELP_WORDS:
            return texts.help_text(self.hotline)
        if text in texts.FAQ_WORDS:
            return await self._faq()
        if text in texts.MY_CASES_WORDS:
            return await self._my_cases()
        if text in texts.POINTS_WORDS:
            return await self._points()
        if m := QUERY_RE.match(text):
            return await self._query(m.group(1).upper())
        if m := RATE_RE.match(text):
            return await self._rate(m.group(1).upper() if m.group(1) else None, int(m.group(2)) if m.group(2) else None)
        if text in ("1", "2", "3", "4", "5"):
            return await self._rate(None, int(text))
        if m := BIND_RE.match(text):
            if m.group(1):
                return await self._bind_start(m.group(1))
            self._set_step(ConversationStep.BIND_PHONE)
            return texts.BIND_ASK
        return await self._question(raw)

    async def _question(self, question: str) -> str:
        result = await assist.answer_question(question[:500], min_score=self.settings.wechat_kb_min_score)
        if result is None:
            return texts.KB_WARMING.format(hotline=self.hotline)
        if result.best is not None:
            best = result.best
            return texts.kb_answer(best.title, best.answer, self.hotline, best.handoff)
        return texts.kb_unknown(self.hotline, result.near)

    async def _faq(self) -> str:
        return ("您可以直接提问，例如：\n· 门前五包是什么\n· 渣土车运输需要办什么手续\n· 城管局几点上班\n"
                f"· 井盖坏了归谁管\n如需人工服务请拨打{self.hotline}。")

    # --- 我要上报 ---------------------------------------------------------------------------------

    async def _report_text(self, raw: str, text: str, *, voice: bool) -> str:
        step = self.conv.step
        if text in texts.REPORT_WORDS:
            return texts.ALREADY_REPORTING + self._prompt_for(step)
        if text in texts.HELP_WORDS:
            return texts.help_text(self.hotline) + "\n\n" + texts.ALREADY_REPORTING + self._prompt_for(step)
        if text in texts.MY_CASES_WORDS:
            return await self._my_cases() + "\n\n" + texts.ALREADY_REPORTING + self._prompt_for(step)
        if text in texts.POINTS_WORDS:
            return await self._points() + "\n\n" + texts.ALREADY_REPORTING + self._prompt_for(step)
        if m := QUERY_RE.match(text):
            return await self._query(m.group(1).upper()) + "\n\n" + texts.ALREADY_REPORTING + self._prompt_for(step)
        if RATE_RE.match(text) or BIND_RE.match(text):
            return texts.FINISH_REPORT_FIRST
        report = self.conv.report
        if step == ConversationStep.DESCRIBE:
            if len(raw) < 5 and not report.get("desc"):
                return texts.PROMPT_DESCRIBE_SHORT
            await self._set_description(raw, voice=voice)
            return await self._advance()
        if step == ConversationStep.PHOTOS:
            if text in texts.DONE_WORDS:
                report["photos_done"] = True
                return await self._advance()
            await self._set_description(f"{report.get('desc', '')}\n{raw}".strip(), voice=voice)
            return texts.DESCRIPTION_ADDED + texts.prompt_photos(len(report.get("photos", [])), self.limit)
        if step == ConversationStep.LOCATION:
            if text in texts.HERE_WORDS and (here := self._here()) is not None:
                report["location"] = {"lat": here["lat"], "lng": here["lng"], "address": "当前所在位置",
                                      "district": None}
                return await self._advance()
            return await self._typed_address(raw)
        if step == ConversationStep.CONFIRM:
            if text in texts.CONFIRM_WORDS:
                return await self._submit()
            if text in texts.EDIT_WORDS:
                self._set_step(ConversationStep.EDIT)
                return texts.PROMPT_EDIT
            if text in texts.CANCEL_CONFIRM_WORDS:
                return self._cancel()
            return texts.CONFIRM_HINT
        # EDIT
        report["editing"] = True
        if text == "1":
            report.pop("desc", None)
            report.pop("suggestion", None)
            self._set_step(ConversationStep.DESCRIBE)
            return "请重新描述问题："
        if text == "2":
            report["photos"] = []
            report["photos_done"] = False
            self._set_step(ConversationStep.PHOTOS)
            return "原照片已清除。" + texts.prompt_photos(0, self.limit)
        if text == "3":
            report.pop("location", None)
            self._set_step(ConversationStep.LOCATION)
            return texts.prompt_location(self._here() is not None)
        return texts.PROMPT_EDIT

    def _prompt_for(self, step: ConversationStep) -> str:
        report = self.conv.report
        if step == ConversationStep.DESCRIBE:
            return texts.PROMPT_DESCRIBE
        if step == ConversationStep.PHOTOS:
            return texts.prompt_photos(len(report.get("photos", [])), self.limit)
        if step == ConversationStep.LOCATION:
            return texts.prompt_location(self._here() is not None)
        if step == ConversationStep.EDIT:
            return texts.PROMPT_EDIT
        return texts.CONFIRM_HINT

    async def _advance(self) -> str:
        """Go to the first missing piece: description, photos, location; then the summary."""
        report = self.conv.report
        if not report.get("desc"):
            self._set_step(ConversationStep.DESCRIBE)
            return texts.PROMPT_DESCRIBE
        if not report.get("photos_done") and not report.get("editing"):
            self._set_step(ConversationStep.PHOTOS)
            return texts.prompt_photos(len(report.get("photos", [])), self.limit)
        if not report.get("location"):
            self._set_step(ConversationStep.LOCATION)
            return texts.prompt_location(self._here() is not None)
        self._set_step(ConversationStep.CONFIRM)
        return self._summary()

    def _summary(self) -> str:
        report = self.conv.report
        location = report.get("location") or {}
        suggestion = report.get("suggestion")
        label = None
        # A suggestion the classifier itself doubts is left to the seat rather than shown to the citizen.
        if isinstance(suggestion, dict) and suggestion.get("code") and suggestion.get("confident", True):
            case_type = self.bot.ctx.kb.taxonomy.get(str(suggestion["code"]))
            if case_type is not None:
                label = f"{case_type.name}（{case_type.major_name}）"
        address = str(location.get("address") or "")
        if location.get("district") and str(location["district"]) not in address:
            address = f"{location['district']} {address}"
        return texts.summary(description=str(report.get("desc", "")), photos=len(report.get("photos", [])),
                             voices=len(report.get("voices", [])), address=address or "（未提供）", suggestion=label)

    async def _set_description(self, text: str, *, voice: bool) -> None:
        report = self.conv.report
        report["desc"] = text[:2000]
        digest = hashlib.sha256(report["desc"].encode()).hexdigest()[:16]
        report["desc_hash"] = digest
        report.pop("suggestion", None)
        if voice:
            await self._add_voice()
        if self.bot.suggester is not None:
            await enqueue(session=self.session, kind=CLASSIFY_KIND,
                          payload={"openid": self.conv.openid, "desc_hash": digest},
                          idempotency_key=f"wechat-classify:{self.conv.openid}:{self.msg.dedupe_key}"[:128])

    async def _add_media(self, kind: str) -> int:
        stmt = dialect_insert(self.session, MEDIA_TABLE).values(
            source_key=f"{self.conv.openid}:{self.msg.dedupe_key}"[:128], openid=self.conv.openid,
            media_id=self.msg.media_id[:256], kind=kind, status=MediaStatus.PENDING, created_at=self.now)
        media_id = await self.session.scalar(
            stmt.on_conflict_do_nothing(index_elements=["source_key"]).returning(MEDIA_TABLE.c.id))
        if media_id is None:
            media_id = await self.session.scalar(select(WeChatMedia.id).where(
                WeChatMedia.source_key == f"{self.conv.openid}:{self.msg.dedupe_key}"[:128]))
        assert media_id is not None
        # MediaIds expire after 3 days: download right away, in the background.
        await enqueue(session=self.session, kind=MEDIA_KIND, payload={"media": int(media_id)},
                      idempotency_key=f"wechat-media:{media_id}")
        return int(media_id)

    async def _add_voice(self) -> None:
        report = self.conv.report
        voices = report.setdefault("voices", [])
        if self.msg.kind == "voice" and self.msg.media_id and len(voices) < MAX_VOICES:
            voices.append(await self._add_media("voice"))

    async def _image(self) -> str:
        step = self.conv.step
        if not self.msg.media_id:
            return texts.LINK_NOT_SUPPORTED
        if step not in REPORT_STEPS:
            if step != ConversationStep.IDLE:
                self._reset()
            self._start_report()
            self.conv.report["photos"].append(await self._add_media("photo"))
            return texts.START_WITH_PHOTO
        report = self.conv.report
        photos = report.setdefault("photos", [])
        if len(photos) >= self.limit:
            return texts.photo_limit(self.limit) + self._prompt_for(step)
        photos.append(await self._add_media("photo"))
        ack = texts.photo_received(len(photos), self.limit)
        if step == ConversationStep.PHOTOS:
            if len(photos) >= self.limit:
                report["photos_done"] = True
                return ack + await self._advance()
            return ack
        if step == ConversationStep.DESCRIBE:
            return ack + "请再用文字或语音描述一下问题。"
        if step == ConversationStep.CONFIRM:
            return ack + "\n" + self._summary()
        return ack + self._prompt_for(step)

    def _coords(self) -> tuple[float, float] | None:
        lat, lng = self.msg.lat, self.msg.lng
        if lat is None or lng is None or not (-90 <= lat <= 90 and -180 <= lng <= 180):
            return None
        return lat, lng

    async def _location_message(self) -> str:
        coords = self._coords()
        label = self.msg.label.strip()[:255]
        place = await assist.resolve_address(label) if label else None
        location = {"lat": coords[0] if coords else None, "lng": coords[1] if coords else None,
                    "address": label or (f"{coords[0]:.5f},{coords[1]:.5f}" if coords else "（位置）"),
                    "district": place.district if place else None}
        step = self.conv.step
        if step not in REPORT_STEPS:
            if step != ConversationStep.IDLE:
                self._reset()
            self._start_report()
            self.conv.report["location"] = location
            return texts.START_WITH_LOCATION
        report = self.conv.report
        report["location"] = location
        if step == ConversationStep.PHOTOS:
            report["photos_done"] = True
        if step in (ConversationStep.DESCRIBE, ConversationStep.EDIT):
            return texts.LOCATION_SAVED + self._prompt_for(step)
        return texts.LOCATION_SAVED + await self._advance()

    async def _typed_address(self, raw: str) -> str:
        place = await assist.resolve_address(raw)
        if place is None and len(raw) < 6:
            return texts.ADDRESS_TOO_VAGUE
        self.conv.report["location"] = {
            "lat": place.lat if place else None, "lng": place.lng if place else None,
            "address": raw[:255], "district": place.district if place else None,
        }
        return await self._advance()

    async def _submit(self) -> str:
        """Create the draft; the confirming message's key makes a redelivery return the same draft."""
        report = self.conv.report
        location = report.get("location") or {}
        photos = [int(i) for i in report.get("photos", [])]
        voices = [int(i) for i in report.get("voices", [])]
        media = [MediaItem(kind="photo", url=MEDIA_URL.format(id=i), mime="image/jpeg") for i in photos]
        media += [MediaItem(kind="voice", url=MEDIA_URL.format(id=i), mime="audio/amr") for i in voices]
        suggestion = report.get("suggestion") if isinstance(report.get("suggestion"), dict) else None
        try:
            loc = Location(lat=location.get("lat"), lng=location.get("lng"),
                           address=(location.get("address") or None), district=location.get("district"))
        except ValidationError:
            loc = Location(address=str(location.get("address") or "")[:255] or None)
        score = suggestion.get("score") if suggestion else None
        data = DraftCreate(
            channel=Channel.WECHAT,
            text=str(report.get("desc") or "（未描述）")[:4000],
            source_key=f"wechat:{self.conv.openid}:{self.msg.dedupe_key}"[:128],
            media=media,
            location=loc,
            reporter=Reporter(openid=self.conv.openid),
            suggested_type_code=suggestion.get("code") if suggestion else None,
            suggested_department=(suggestion.get("department") or None) if suggestion else None,
            suggestion_confidence=min(1.0, max(0.0, float(score))) if isinstance(score, int | float) else None,
        )
        draft = await cases.create_draft(session=self.session, data=data, kb=self.bot.ctx.kb,
                                         region=self.settings.default_region)
        if photos or voices:
            await self.session.execute(update(WeChatMedia).where(WeChatMedia.id.in_(photos + voices))
                                       .values(draft_id=draft.id))
        self.conv.citizen_id = draft.citizen_id
        self.conv.data["last_draft"] = draft.number
        self._reset()
        log.info("wechat report from %s became draft %s (%d photos)", mask_openid(self.conv.openid), draft.number,
                 len(photos))
        return texts.submitted(draft.number, self.hotline)

    # --- my cases, query, points ----------------------------------------------------------------

    async def _my_cases(self) -> str:
        citizen_id = await self._citizen_id(create=False)
        if citizen_id is None:
            return texts.NO_CASES
        drafts = list(await self.session.scalars(
            select(DraftCase).options(lazyload(DraftCase.citizen)).where(DraftCase.citizen_id == citizen_id)
            .order_by(DraftCase.created_at.desc()).limit(5)))
        if not drafts:
            return texts.NO_CASES
        by_draft = {c.draft_id: c for c in await self.session.scalars(
            select(Case).where(Case.draft_id.in_([d.id for d in drafts])))}
        lines = ["您最近的上报："]
        for i, draft in enumerate(drafts, 1):
            lines.append(f"{i}. {draft.number}（{_local(draft.created_at)}）{await self._status_line(draft, by_draft.get(draft.id))}")
            lines.append(f"   {draft.raw_text[:24]}{'…' if len(draft.raw_text) > 24 else ''}")
        lines.append("回复“查询+编号”查看详情。")
        return "\n".join(lines)

    async def _status_line(self, draft: DraftCase, case: Case | None) -> str:
        if case is not None:
            label = STEP_LABELS[case.step] if case.step != Step.CLOSE else "已办结"
            rated = case.step == Step.CLOSE and case.rating_score is None and not await self.session.scalar(
                select(Rating.id).where(Rating.case_id == case.id))
            return f"案件号{case.number or '（立案中）'} · {label}{' · 待评价' if rated else ''}"
        if draft.status == DraftStatus.REJECTED:
            return f"未立案：{draft.reject_reason or ''}"
        if draft.status == DraftStatus.MERGED:
            merged = await self.session.get(Case, draft.merged_into_case_id) if draft.merged_into_case_id else None
            return f"已并入案件{merged.number if merged and merged.number else ''}处理"
        if draft.status == DraftStatus.ANSWERED:
            return "已答复"
        return "待受理"

    async def _query(self, number: str) -> str:
        citizen_id = await self._citizen_id(create=False)
        not_found = texts.NOT_FOUND.format(number=number)
        if citizen_id is None:
            return not_found
        draft = await self.session.scalar(
            select(DraftCase).where(DraftCase.number == number, DraftCase.citizen_id == citizen_id))
        case = None
        if draft is not None:
            case = await self.session.scalar(select(Case).where(Case.draft_id == draft.id))
        else:
            case = await self.session.scalar(select(Case).where(Case.number == number, Case.citizen_id == citizen_id))
            if case is not None:
                draft = await self.session.get(DraftCase, case.draft_id)
        if draft is None:
            return not_found
        lines = [f"上报编号：{draft.number}（{_local(draft.created_at)}）", f"内容：{draft.raw_text[:60]}",
                 f"状态：{await self._status_line(draft, case)}"]
        if case is not None:
            case_type = self.bot.ctx.kb.taxonomy.get(case.case_type_code)
            if case_type:
                lines.append(f"类型：{case_type.name}")
            department = self.bot.ctx.kb.routing.department_name(case.department)
            if department and case.step not in (Step.COLLECT, Step.REGISTER):
                lines.append(f"承办单位：{department}")
            if case.deadline_at and case.step not in (Step.CLOSE, Step.RATE):
                lines.append(f"预计办结：{case.deadline_at.astimezone(LOCAL_TZ).strftime('%m月%d日%H:%M')}前")
            events = list(await self.session.scalars(
                select(CaseEvent).where(CaseEvent.case_id == case.id).order_by(CaseEvent.at, CaseEvent.id)))
            if events:
                lines.append("进度：")
                lines += [f"· {e.at.astimezone(LOCAL_TZ).strftime('%m-%d %H:%M')} {STEP_LABELS[e.step]}"
                          for e in events[-8:]]
            if case.step == Step.CLOSE and case.rating_score is None:
                lines.append(f"回复“评价{case.number} 5”为处理结果打分（1-5分）。")
        return "\n".join(lines)

    async def _points(self) -> str:
        citizen_id = await self._citizen_id(create=False)
        if citizen_id is None:
            return texts.POINTS_NONE
        await settle_duplicate_points(session=self.session, citizen_id=citizen_id,
                                      points=self.settings.wechat_points_duplicate_report)
        total = int(await self.session.scalar(
            select(func.coalesce(func.sum(PointsEntry.delta), 0)).where(PointsEntry.citizen_id == citizen_id)) or 0)
        entries = list(await self.session.scalars(select(PointsEntry).where(PointsEntry.citizen_id == citizen_id)
                                                  .order_by(PointsEntry.created_at.desc()).limit(5)))
        if not entries:
            return texts.POINTS_NONE
        lines = "\n".join(f"· {_local(e.created_at)} {texts.POINT_REASONS.get(e.reason, e.reason)} +{e.delta}"
                          for e in entries)
        return texts.POINTS.format(total=total, lines=lines)

    # --- ratings ---------------------------------------------------------------------------------

    async def _rate(self, number: str | None, score: int | None) -> str:
        citizen_id = await self._citizen_id(create=False)
        if citizen_id is None:
            return texts.RATE_NONE
        if number is not None:
            case = await self.session.scalar(select(Case).where(Case.number == number, Case.citizen_id == citizen_id))
            if case is None:
                return texts.NOT_FOUND.format(number=number)
            candidates = [case]
        else:
            candidates = list(await self.session.scalars(
                select(Case).outerjoin(Rating, Rating.case_id == Case.id)
                .where(Case.citizen_id == citizen_id, Case.step == Step.CLOSE, Rating.id.is_(None))
                .order_by(Case.closed_at.desc().nulls_last(), Case.id.desc()).limit(5)))
            if not candidates:
                return texts.RATE_NONE
        case = candidates[0]
        if score is None:
            if len(candidates) > 1:
                lines = "\n".join(f"· {c.number}" for c in candidates)
                return texts.RATE_MANY.format(count=len(candidates), lines=lines, example=candidates[0].number)
            case_type = self.bot.ctx.kb.taxonomy.get(case.case_type_code)
            return texts.RATE_PROMPT.format(number=case.number, case_type=case_type.name if case_type else "")
        try:
            async with self.session.begin_nested():
                rating = await cases.rate_case(session=self.session, case=case, score=score, channel=Channel.WECHAT,
                                               comment=None)
        except Conflict as err:
            if err.error_id == "already-rated":
                return texts.ALREADY_RATED.format(number=case.number)
            return texts.NOT_CLOSED.format(number=case.number)
        label = texts.SCORE_LABELS[score]
        if rating.score <= 2:
            await flag_second_callback(session=self.session, case=case, score=rating.score, citizen_id=citizen_id)
            self.conv.data["rating_case"] = case.id
            self._set_step(ConversationStep.RATING_COMMENT)
            return texts.RATED_BAD.format(number=case.number, score=rating.score, label=label)
        return texts.RATED.format(number=case.number, score=rating.score, label=label)

    async def _rating_comment(self, comment: str) -> str:
        case_id = self.conv.data.get("rating_case")
        self._reset()
        if isinstance(case_id, int):
            self.session.add(Message(channel=Channel.WECHAT, direction=Direction.INBOUND,
                                     external_id=f"rating-comment:{self.conv.openid}:{self.msg.dedupe_key}"[:128],
                                     citizen_id=self.conv.citizen_id, case_id=case_id, kind="rating_comment",
                                     body=comment[:2000]))
            emit(self.session, "case.rating_comment", {"case_id": case_id, "channel": Channel.WECHAT.value})
        return texts.COMMENT_THANKS

    # --- phone binding ---------------------------------------------------------------------------

    async def _bind_start(self, raw_phone: str) -> str:
        if not PHONE_RE.match(raw_phone.strip()):
            self._set_step(ConversationStep.BIND_PHONE)
            return texts.BIND_BAD_PHONE
        try:
            phone = normalise_phone(raw_phone, region=self.settings.default_region)
        except InvalidPhone:
            self._set_step(ConversationStep.BIND_PHONE)
            return texts.BIND_BAD_PHONE
        if phone.startswith("+86") and not re.fullmatch(r"\+861[3-9]\d{9}", phone):
            self._set_step(ConversationStep.BIND_PHONE)
            return texts.BIND_BAD_PHONE
        # The rate limits outlive a binding attempt (and 取消), so they are kept apart from the code.
        limits = dict(self.conv.data.get("bind_limits") or {})
        today = self.now.astimezone(LOCAL_TZ).date().isoformat()
        sent_today = int(limits.get("sent_today", 0)) if limits.get("day") == today else 0
        last_sent = float(limits.get("sent_at", 0))
        wait = BIND_RESEND.total_seconds() - (self.now.timestamp() - last_sent)
        if wait > 0:
            return texts.BIND_WAIT.format(seconds=int(wait) + 1)
        if sent_today >= BIND_PER_DAY:
            return texts.BIND_DAILY_LIMIT
        code = f"{secrets.randbelow(10**6):06d}"
        ttl = int(self.settings.wechat_bind_code_ttl_minutes)
        secret = self.settings.secret_key.get_secret_value()
        self.conv.data["bind"] = {
            "phone": phone, "code": _code_hash(secret, self.conv.openid, phone, code),
            "expires": self.now.timestamp() + ttl * 60, "attempts": 0,
        }
        self.conv.data["bind_limits"] = {"day": today, "sent_today": sent_today + 1, "sent_at": self.now.timestamp()}
        key = f"wechat-bind:{self.conv.openid}:{self.msg.dedupe_key}"[:128]
        await enqueue(session=self.session, kind="sms.text", idempotency_key=key, payload={
            "to": phone, "key": key,
            "text": texts.BIND_SMS.format(account=self.settings.wechat_account_name, code=code, minutes=ttl)})
        self._set_step(ConversationStep.BIND_CODE)
        log.info("wechat %s asked to bind %s; code queued", mask_openid(self.conv.openid), mask_phone(phone))
        return texts.BIND_SENT.format(masked=mask_phone(phone), minutes=ttl)

    async def _bind_verify(self, code: str) -> str:
        bind = dict(self.conv.data.get("bind") or {})
        if not bind.get("phone"):
            self._set_step(ConversationStep.IDLE)
            return texts.BIND_EXPIRED
        if self.now.timestamp() > float(bind.get("expires", 0)):
            self._reset()
            return texts.BIND_EXPIRED
        attempts = int(bind.get("attempts", 0)) + 1
        secret = self.settings.secret_key.get_secret_value()
        expected = _code_hash(secret, self.conv.openid, str(bind["phone"]), code)
        if not hmac.compare_digest(expected, str(bind.get("code", ""))):
            if attempts >= BIND_ATTEMPTS:
                self._reset()
                return texts.BIND_TOO_MANY
            bind["attempts"] = attempts
            self.conv.data["bind"] = bind
            return texts.BIND_WRONG.format(left=BIND_ATTEMPTS - attempts)
        phone = str(bind["phone"])
        citizen_id = await bind_phone(session=self.session, openid=self.conv.openid, phone=phone)
        self.conv.citizen_id = citizen_id
        self.conv.data.pop("bind", None)
        self._set_step(ConversationStep.IDLE)
        return texts.BIND_DONE.format(masked=mask_phone(phone))

    # --- events ----------------------------------------------------------------------------------

    async def _event(self) -> str | None:
        msg = self.msg
        event = msg.event
        if event in ("subscribe", "subscribe_scan"):
            return texts.welcome(self.settings.wechat_account_name, self.hotline)
        if event == "scan":
            return texts.help_text(self.hotline)
        if event == "unsubscribe":
            await unlink_openid(session=self.session, openid=self.conv.openid)
            self._reset()
            self.conv.citizen_id = None
            self.conv.data.pop("here", None)
            self.conv.data.pop("last_draft", None)
            await enqueue(session=self.session, kind=FORGET_KIND,
                          payload={"openid": self.conv.openid, "before": self.now.isoformat()},
                          idempotency_key=f"wechat-forget:{self.conv.openid}:{msg.dedupe_key}"[:128])
            return None
        if event == "location":
            if self._coords() is not None:
                self.conv.data["here"] = {"lat": msg.lat, "lng": msg.lng, "at": self.now.timestamp()}
            return None
        if event == "click":
            word = texts.MENU_KEYS.get(msg.event_key.upper())
            if word is None:
                log.info("unknown menu key %r", msg.event_key[:32])
                return texts.help_text(self.hotline)
            return await self._text(word)
        if event == "templatesendjobfinish":
            await record_template_result(session=self.session, msgid=msg.content, status=msg.status)
            return None
        # view, pic_*, location_select (the photos / location then arrive as messages), and events unknown
        # to wechatpy: nothing to answer.
        log.debug("wechat event %s ignored", event[:32])
        return None


# --- service functions used by the dialogue and the outbox handlers --------------------------------


async def flag_second_callback(*, session: AsyncSession, case: Case, score: int, citizen_id: int | None) -> None:
    """Mark a bad rating for a second callback (差评二次回访): a message on the case and a live event."""
    external = f"callback:{case.id}"
    exists = await session.scalar(select(Message.id).where(
        Message.channel == Channel.WECHAT, Message.direction == Direction.INBOUND, Message.external_id == external))
    if exists is None:
        session.add(Message(channel=Channel.WECHAT, direction=Direction.INBOUND, external_id=external,
                            citizen_id=citizen_id, case_id=case.id, kind="callback_request",
                            body=f"市民在微信评价{score}分（{texts.SCORE_LABELS[score]}），需安排二次回访。"))
        await session.flush()
    emit(session, "case.callback_requested", {"case_id": case.id, "number": case.number, "score": score,
                                              "channel": Channel.WECHAT.value})


async def settle_duplicate_points(*, session: AsyncSession, citizen_id: int, points: int) -> None:
    """Give the reduced points for WeChat reports merged into an earlier case (once per case)."""
    if points <= 0:
        return
    merged = await session.scalars(select(DraftCase.merged_into_case_id).where(
        DraftCase.citizen_id == citizen_id, DraftCase.status == DraftStatus.MERGED,
        DraftCase.channel == Channel.WECHAT, DraftCase.merged_into_case_id.is_not(None)))
    for case_id in set(merged):
        case = await session.get(Case, case_id)
        if case is None or case.citizen_id == citizen_id:
            continue  # the first reporter already has the full amount
        await cases.award_points(session=session, citizen_id=citizen_id, case_id=case_id, delta=points,
                                 reason="duplicate_report")


async def record_template_result(*, session: AsyncSession, msgid: str, status: str) -> None:
    """Mark a template notice delivered or failed from WeChat's TEMPLATESENDJOBFINISH event."""
    if not msgid:
        return
    notification = await session.scalar(select(Notification).where(
        Notification.channel == Channel.WECHAT, Notification.provider_message_id == msgid))
    if notification is None:
        return
    if status == "success":
        notification.status = NotificationStatus.DELIVERED
        notification.delivered_at = utcnow()
    else:
        notification.status = NotificationStatus.FAILED
        notification.error = f"wechat: {status}"[:500]


async def unlink_openid(*, session: AsyncSession, openid: str) -> None:
    """Unfollow: the openid no longer belongs to any citizen; cases keep their history, pseudonymous."""
    contact = await session.scalar(select(CitizenContact).where(
        CitizenContact.kind == ContactKind.WECHAT, CitizenContact.value == openid))
    if contact is not None:
        citizen_id = contact.citizen_id
        await session.delete(contact)
        await record(session=session, operator=None, action="wechat.unsubscribe", target_type="citizen",
                     target_id=str(citizen_id), details={"openid": mask_openid(openid)}, actor="wechat")
    log.info("wechat %s unfollowed: openid unlinked", mask_openid(openid))


async def bind_phone(*, session: AsyncSession, openid: str, phone: str) -> int:
    """Link a verified phone to the openid's citizen, merging with the phone's citizen (hotline history)."""
    by_phone = await cases.find_citizen(session=session, kind=ContactKind.PHONE, value=phone)
    by_openid = await cases.find_citizen(session=session, kind=ContactKind.WECHAT, value=openid)
    if by_phone is None:
        citizen = by_openid or await cases.get_or_create_citizen(session=session, openid=openid)
        assert citizen is not None
        session.add(CitizenContact(citizen_id=citizen.id, kind=ContactKind.PHONE, value=phone, verified=True))
        await session.flush()
        target = citizen.id
    else:
        target = by_phone.id
        await session.execute(update(CitizenContact).where(
            CitizenContact.citizen_id == target, CitizenContact.kind == ContactKind.PHONE,
            CitizenContact.value == phone).values(verified=True))
        if by_openid is None:
            session.add(CitizenContact(citizen_id=target, kind=ContactKind.WECHAT, value=openid, verified=True))
            await session.flush()
        elif by_openid.id != target:
            await merge_citizens(session=session, source_id=by_openid.id, target_id=target)
    await session.execute(update(TABLE).where(TABLE.c.openid == openid).values(citizen_id=target))
    await record(session=session, operator=None, action="wechat.bind_phone", target_type="citizen",
                 target_id=str(target), details={"phone": mask_phone(phone), "openid": mask_openid(openid)},
                 actor="wechat")
    return target


async def merge_citizens(*, session: AsyncSession, source_id: int, target_id: int) -> None:
    """Move everything of one citizen to another (the same person known by openid and by phone)."""
    import_all_models()
    # Every table pointing at citizens (drafts, cases, messages, calls, …) follows the person.
    for table in Base.metadata.sorted_tables:
        if table.name in ("citizen_contacts", "points_ledger"):
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == "citizens":
                await session.execute(update(table).where(fk.parent == source_id).values({fk.parent.name: target_id}))
    for entry in list(await session.scalars(select(PointsEntry).where(PointsEntry.citizen_id == source_id))):
        clash = await session.scalar(select(PointsEntry.id).where(
            PointsEntry.citizen_id == target_id, PointsEntry.reason == entry.reason,
            PointsEntry.case_id == entry.case_id if entry.case_id is not None else PointsEntry.case_id.is_(None)))
        if clash is None:
            entry.citizen_id = target_id
        else:
            await session.delete(entry)
    await session.execute(update(CitizenContact).where(CitizenContact.citizen_id == source_id)
                          .values(citizen_id=target_id))
    await session.flush()
    source = await session.get(Citizen, source_id)
    if source is not None:
        await session.refresh(source, ["contacts"])
        await session.delete(source)
    await session.flush()


# --- outbox handlers ------------------------------------------------------------------------------


def storage_key(row: WeChatMedia, mime: str) -> str:
    """Where a media file is stored: by month and row, never from citizen-controlled text."""
    digest = hashlib.sha256(row.media_id.encode()).hexdigest()[:12]
    return f"wechat/{row.created_at:%Y/%m}/{row.id}-{digest}.{EXTENSIONS.get(mime, 'bin')}"


async def download_media(*, bot: WeChatBot, media_row_id: int) -> None:
    """Fetch a photo or voice note from the media API into media storage (size and type checked)."""
    sessions = bot.ctx.sessions
    async with sessions() as session:
        row = await session.get(WeChatMedia, media_row_id)
    if row is None or row.status != MediaStatus.PENDING:
        return
    if bot.api is None:
        raise TemporaryFailure("INTAKE_WECHAT_APP_SECRET not set: media download waits")
    settings = bot.settings
    try:
        download = await bot.api.download_media(row.media_id, max_bytes=settings.wechat_media_max_bytes)
    except WeChatRejected as err:
        await _media_failed(bot, media_row_id, str(err))
        raise PermanentFailure(str(err)) from err
    except WeChatUnavailable as err:
        raise TemporaryFailure(str(err)) from err
    mime = sniff_type(download.data)
    if mime is None or mime not in settings.wechat_media_types:
        reason = f"media type {mime or download.content_type or 'unknown'} not accepted"
        await _media_failed(bot, media_row_id, reason)
        raise PermanentFailure(reason)
    key = storage_key(row, mime)
    await bot.storage.save(key, download.data, mime=mime)
    async with bot.ctx.uow() as session:
        result = await session.execute(update(WeChatMedia).where(WeChatMedia.id == media_row_id).values(
            status=MediaStatus.STORED, storage_key=key, mime=mime, size=len(download.data), stored_at=utcnow(),
            error=None))
        stored = result.rowcount == 1  # type: ignore[attr-defined]
        row_now = await session.get(WeChatMedia, media_row_id) if stored else None
        if row_now is not None and row_now.draft_id is not None:
            await _fix_draft_mime(session, row_now.draft_id, media_row_id, mime)
    if not stored:
        # The citizen unfollowed meanwhile and the row was forgotten: do not keep an orphan file.
        await bot.storage.delete(key)
        return
    log.info("wechat media %s stored (%s, %d bytes)", media_row_id, mime, len(download.data))


async def _fix_draft_mime(session: AsyncSession, draft_id: int, media_row_id: int, mime: str) -> None:
    draft = await session.get(DraftCase, draft_id)
    if draft is None:
        return
    url = MEDIA_URL.format(id=media_row_id)
    media = [dict(m) | ({"mime": mime} if m.get("url") == url else {}) for m in draft.media]
    if media != draft.media:
        draft.media = media


async def _media_failed(bot: WeChatBot, media_row_id: int, reason: str) -> None:
    async with bot.ctx.uow() as session:
        await session.execute(update(WeChatMedia).where(WeChatMedia.id == media_row_id).values(
            status=MediaStatus.FAILED, error=reason[:255]))
    log.warning("wechat media %s not stored: %s", media_row_id, reason)


async def classify_report(*, bot: WeChatBot, openid: str, desc_hash: str) -> None:
    """Suggest the case type of the description being collected, if it is still the same one."""
    if bot.suggester is None:
        return
    async with bot.ctx.sessions() as session:
        data = await session.scalar(select(ConversationRow.data).where(ConversationRow.openid == openid))
    report = (data or {}).get("report") or {}
    if report.get("desc_hash") != desc_hash or not report.get("desc"):
        return
    suggestion = await bot.suggester(str(report["desc"]))
    if suggestion is None:
        return
    for _ in range(5):
        try:
            async with bot.ctx.uow() as session:
                conv = await lock_conversation(session=session, openid=openid, now=utcnow())
                current = conv.data.get("report") or {}
                if current.get("desc_hash") != desc_hash:
                    return
                current["suggestion"] = {"code": suggestion.code, "name": suggestion.name, "score": suggestion.score,
                                         "department": suggestion.department, "confident": suggestion.confident}
                conv.data["report"] = current
                await save_conversation(session=session, conv=conv, now=utcnow())
            return
        except Exception as err:
            if not _retryable(err):
                raise
            await asyncio.sleep(random.uniform(0.01, 0.05))  # noqa: S311 - jitter
    raise TemporaryFailure("conversation stayed busy")


async def send_late_reply(*, bot: WeChatBot, openid: str, text: str) -> None:
    """Deliver a reply that missed the 5-second window as a customer-service message."""
    if bot.api is None:
        raise PermanentFailure("INTAKE_WECHAT_APP_SECRET not set: no customer-service messages")
    try:
        await bot.api.send_text(openid, text)
    except WeChatRejected as err:
        raise PermanentFailure(str(err)) from err
    except WeChatUnavailable as err:
        raise TemporaryFailure(str(err)) from err


async def forget_media(*, bot: WeChatBot, openid: str, before: dt.datetime) -> None:
    """After an unfollow, delete the photos and voice notes that never became part of a report."""
    async with bot.ctx.sessions() as session:
        rows = list(await session.scalars(select(WeChatMedia).where(
            WeChatMedia.openid == openid, WeChatMedia.draft_id.is_(None), WeChatMedia.created_at <= before)))
    for row in rows:
        if row.storage_key:
            await bot.storage.delete(row.storage_key)
    if rows:
        async with bot.ctx.uow() as session:
            await session.execute(delete(WeChatMedia).where(WeChatMedia.id.in_([r.id for r in rows]),
                                                            WeChatMedia.draft_id.is_(None)))
    log.info("wechat %s: %d unsent media files deleted after unfollow", mask_openid(openid), len(rows))


async def prune(*, bot: WeChatBot, now: dt.datetime | None = None) -> None:
    """Housekeeping: old nonces, stored replies nobody can redeliver any more, abandoned reports."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=2 * bot.settings.wechat_max_clock_skew_seconds)
    quiet = now - dt.timedelta(seconds=RECENT_SECONDS * 5)
    async with bot.ctx.uow() as session:
        # Nonces older than the clock window can no longer be replayed.
        await session.execute(delete(SeenNonce).where(SeenNonce.created_at < cutoff))
        # Stored replies quote what citizens wrote; they are only needed for redeliveries (seconds).
        length = func.jsonb_array_length if session.get_bind().dialect.name == "postgresql" else func.json_array_length
        await session.execute(update(TABLE).where(TABLE.c.updated_at < quiet, length(TABLE.c.recent) > 0)
                              .values(recent=[], version=TABLE.c.version + 1))
        abandoned = list(await session.scalars(select(TABLE.c.openid).where(
            TABLE.c.step.in_([s.value for s in REPORT_STEPS]),
            TABLE.c.step_expires_at < now - dt.timedelta(days=1)).limit(500)))
    # A report left unfinished for a day is dropped: its description and location are personal data.
    for openid in abandoned:
        async with bot.ctx.uow() as session:
            conv = await lock_conversation(session=session, openid=openid, now=now)
            if conv.step in REPORT_STEPS and conv.step_expires_at and conv.step_expires_at < now:
                conv.data.pop("report", None)
                conv.step, conv.step_expires_at = ConversationStep.IDLE, None
                await save_conversation(session=session, conv=conv, now=now)
