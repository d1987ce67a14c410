"""Open intake API operations: keys and limits, Open311 requests, 12345 orders, alarms, signed status webhooks."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import inspect
import json
import logging
import math
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.audit import record
from core.cases.models import STEP_LABELS, Case, CaseEvent, CaseState, DraftCase, DraftStatus, Step
from core.cases.schemas import MAX_TEXT, DraftCreate, Location, MediaItem, Reporter
from core.cases.service import create_draft
from core.context import emit
from core.db import utcnow
from core.errors import Conflict, NotFound
from core.models import Channel, Operator, ProcessedKey
from core.open311 import catalog
from core.open311.client import DeliveryError, WebhookSender
from core.open311.formats import Open311Error, iso
from core.open311.media import StoredPhoto
from core.open311.models import (
    AlarmIncident,
    ApiClient,
    DeliveryAttempt,
    DeliveryStatus,
    RateCounter,
    RequestKind,
    Scope,
    ServiceRequest,
    WebhookDelivery,
)
from core.open311.schemas import Alarm, TransferOrder
from core.outbox import PermanentFailure, TemporaryFailure, enqueue
from core.phone import InvalidPhone, mask_phone, normalise_phone
from core.workflow.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from kb.service import LOCAL_TZ, CaseType, KnowledgeBase

log = logging.getLogger(__name__)

KEY_PREFIX = "o311_"
SECRET_PREFIX = "whsec_"
DELIVERY_KIND = "open311.deliver"
STATUS_EVENT = "service_request.updated"
RESULT_EVENT = "transfer.result"
PING_EVENT = "ping"
MAX_DESCRIPTION = 4000  # GeoReport v2: "description … may not exceed 4000 characters"
MAX_SPAN = dt.timedelta(days=90)  # GeoReport v2: default and largest date range of GET requests
MAX_RESULTS = 1000
CLOSED_WITHOUT_STEP = (DraftStatus.REJECTED, DraftStatus.ANSWERED, DraftStatus.MERGED)


# --- API keys --------------------------------------------------------------------------------------


def hash_key(key: str) -> str:
    """Hash an API key for storage (the key has 256 random bits, so a fast hash is enough)."""
    return hashlib.sha256(key.encode()).hexdigest()


def _new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def _new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


async def create_client(
    *, session: AsyncSession, name: str, scopes: Sequence[Scope], rate_per_minute: int, quota_per_day: int,
    contact: str | None = None, webhook_url: str | None = None, operator: Operator | None = None,
    actor: str | None = None,
) -> tuple[ApiClient, str]:
    """Create a client and return it with its API key (the key is stored hashed and never shown again)."""
    if await session.scalar(select(ApiClient.id).where(ApiClient.name == name)) is not None:
        raise Conflict("该名称的接口客户端已存在", error_id="client-exists")
    key = _new_key()
    client = ApiClient(
        name=name, contact=contact, key_prefix=key[:12], key_hash=hash_key(key),
        scopes=sorted({Scope(s).value for s in scopes}), rate_per_minute=rate_per_minute,
        quota_per_day=quota_per_day, signing_secret=_new_secret(), webhook_url=webhook_url, active=True,
    )
    session.add(client)
    await session.flush()
    await record(session=session, operator=operator, actor=actor, action="open311.client.create",
                 target_type="api_client", target_id=str(client.id),
                 details={"name": name, "scopes": client.scopes, "rate_per_minute": rate_per_minute,
                          "quota_per_day": quota_per_day})
    return client, key


async def get_client(*, session: AsyncSession, name: str) -> ApiClient:
    """Return a client by name or raise NotFound."""
    client = await session.scalar(select(ApiClient).where(ApiClient.name == name))
    if client is None:
        raise NotFound("接口客户端不存在", error_id="client-not-found")
    return client


async def rotate_key(*, session: AsyncSession, client: ApiClient, operator: Operator | None = None,
                     actor: str | None = None) -> str:
    """Replace the API key (the old one stops working at once) and return the new one."""
    key = _new_key()
    client.key_prefix, client.key_hash = key[:12], hash_key(key)
    await record(session=session, operator=operator, actor=actor, action="open311.client.rotate_key",
                 target_type="api_client", target_id=str(client.id))
    return key


async def rotate_secret(*, session: AsyncSession, client: ApiClient, operator: Operator | None = None,
                        actor: str | None = None) -> str:
    """Replace the signing secret of webhooks and callbacks and return it."""
    client.signing_secret = _new_secret()
    await record(session=session, operator=operator, actor=actor, action="open311.client.rotate_secret",
                 target_type="api_client", target_id=str(client.id))
    return client.signing_secret


async def set_active(*, session: AsyncSession, client: ApiClient, active: bool, operator: Operator | None = None,
                     actor: str | None = None) -> None:
    """Switch a client on or off (off: its key is refused and nothing more is delivered to it)."""
    client.active = active
    await record(session=session, operator=operator, actor=actor,
                 action="open311.client.enable" if active else "open311.client.disable",
                 target_type="api_client", target_id=str(client.id))


async def authenticate(*, session: AsyncSession, raw_key: str | None) -> ApiClient | None:
    """Return the active client owning this key, or None."""
    if not raw_key or not raw_key.startswith(KEY_PREFIX) or len(raw_key) > 128:
        return None
    client = await session.scalar(select(ApiClient).where(ApiClient.key_hash == hash_key(raw_key)))
    return client if client is not None and client.active else None


def has_scope(client: ApiClient, scope: Scope) -> bool:
    """Tell whether the client's key allows this door."""
    return scope.value in (client.scopes or [])


# --- rate limits and quotas ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateState:
    """The outcome of counting one request against a client's limits."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int
    reason: str | None = None  # "minute" or "day" when refused

    def headers(self) -> dict[str, str]:
        """The X-RateLimit-* headers (and Retry-After when refused)."""
        headers = {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(max(0, self.remaining)),
                   "X-RateLimit-Reset": str(self.reset_seconds)}
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers

    @property
    def message(self) -> str:
        """Why the request was refused, in Chinese."""
        if self.reason == "day":
            return f"今日提交配额（{self.limit} 次）已用完，请明日再试或联系指挥中心调整配额"
        return f"请求过于频繁（每分钟最多 {self.limit} 次），请 {max(1, self.reset_seconds)} 秒后重试"


async def _bump(session: AsyncSession, client_id: int, windows: Sequence[str]) -> dict[str, int]:
    """Atomically add one to each window counter and return the new counts (one statement, any process)."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = insert(RateCounter).values([{"client_id": client_id, "window": w, "count": 1} for w in windows])
    stmt = stmt.on_conflict_do_update(index_elements=["client_id", "window"], set_={"count": RateCounter.count + 1})
    rows = await session.execute(stmt.returning(RateCounter.window, RateCounter.count))
    return {str(window): int(count) for window, count in rows.all()}


async def hit_rate(*, session: AsyncSession, client: ApiClient, now: dt.datetime, write: bool) -> RateState:
    """Count a request: every request against the per-minute rate, submissions also against the daily quota."""
    local = now.astimezone(LOCAL_TZ)
    minute, day = f"m{now.astimezone(dt.UTC):%Y%m%d%H%M}", f"d{local:%Y%m%d}"
    counts = await _bump(session, client.id, [minute, day] if write else [minute])
    per_minute = counts[minute]
    minute_reset = 60 - now.second
    if per_minute == 1:
        # First request of a new minute: a cheap moment to forget old windows and note the client is alive.
        old_minute = f"m{(now - dt.timedelta(minutes=10)).astimezone(dt.UTC):%Y%m%d%H%M}"
        old_day = f"d{(now - dt.timedelta(days=3)).astimezone(LOCAL_TZ):%Y%m%d}"
        await session.execute(delete(RateCounter).where(
            RateCounter.client_id == client.id,
            or_(and_(RateCounter.window.like("m%"), RateCounter.window < old_minute),
                and_(RateCounter.window.like("d%"), RateCounter.window < old_day))))
        await session.execute(update(ApiClient).where(ApiClient.id == client.id).values(last_used_at=now))
    if per_minute > client.rate_per_minute:
        if write:  # refused before it was a submission: give the day its unit back
            await session.execute(update(RateCounter).where(RateCounter.client_id == client.id,
                                                            RateCounter.window == day)
                                  .values(count=RateCounter.count - 1))
        return RateState(False, client.rate_per_minute, 0, minute_reset, "minute")
    if write and counts[day] > client.quota_per_day:
        midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), LOCAL_TZ)
        return RateState(False, client.quota_per_day, 0, int((midnight - local).total_seconds()), "day")
    return RateState(True, client.rate_per_minute, client.rate_per_minute - per_minute, minute_reset)


# --- classifier --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClassifierResult:
    """The classifier's ranked case types (known codes only) and its suggested department."""

    ranked: tuple[tuple[str, float | None], ...]
    department: str | None = None


@dataclass(frozen=True, slots=True)
class Suggestion:
    """What the draft shows the operator as the suggested type and department."""

    code: str | None = None
    department: str | None = None
    confidence: float | None = None


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)


def read_classifier_output(raw: Any, kb: KnowledgeBase) -> ClassifierResult | None:
    """Read `{"suggestions": [{"code", "score"}…], "department"}`, a list of suggestions, or such an object."""
    if raw is None:
        return None
    if not isinstance(raw, Mapping | list | tuple) and callable(getattr(raw, "to_dict", None)):
        raw = raw.to_dict()
    items = raw if isinstance(raw, list | tuple) else _field(raw, "suggestions")
    if items is None:
        items = [raw]
    ranked: list[tuple[str, float | None]] = []
    for item in items:
        code = _field(item, "code")
        if isinstance(code, str) and kb.taxonomy.get(code) is not None:
            score = _field(item, "score")
            ok = isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score)
            ranked.append((code, float(score) if ok else None))
    if not ranked:
        return None
    department = None if isinstance(raw, list | tuple) else _field(raw, "department")
    return ClassifierResult(tuple(ranked), str(department)[:64] if department else None)


def _call_sync(fn: Any, text: str, district: str | None) -> Any:
    try:
        return fn(text, district=district)
    except TypeError:
        return fn(text)


_classifier_trouble: list[str] = []  # the last failure kind, so a missing model is logged once, not per report


def _trouble(kind: str, message: str, *args: object) -> None:
    if _classifier_trouble[-1:] != [kind]:
        log.warning(message, *args)
        _classifier_trouble[:] = [kind]


async def classify(classifier: Any, text: str, *, district: str | None, budget: float,
                   kb: KnowledgeBase) -> ClassifierResult | None:
    """Ask the classifier off the event loop, within a time budget; None when absent, slow or broken."""
    if classifier is None or not text.strip():
        return None
    try:
        if callable(getattr(classifier, "suggest_async", None)):
            pending: Any = classifier.suggest_async(text, district=district)
        elif callable(getattr(classifier, "suggest", None)):
            pending = asyncio.to_thread(_call_sync, classifier.suggest, text, district)
        else:
            return None
        raw = await asyncio.wait_for(pending, timeout=budget)
        if inspect.isawaitable(raw):
            raw = await asyncio.wait_for(raw, timeout=budget)
    except TimeoutError:
        _trouble("timeout", "classifier gave no suggestion within %.1fs; API drafts go on without", budget)
        return None
    except Exception as err:  # noqa: BLE001 - a suggestion is optional; the report is never lost for it
        _trouble(type(err).__name__, "classifier failed (%s: %s); API drafts go on without a suggestion",
                 type(err).__name__, str(err)[:120])
        return None
    if _classifier_trouble:
        log.info("classifier suggestions are back for API drafts")
        _classifier_trouble.clear()
    return read_classifier_output(raw, kb)


def choose_suggestion(*, kb: KnowledgeBase, requested: str | None, result: ClassifierResult | None,
                      district: str | None) -> Suggestion:
    """Prefer the reporter's own type when the classifier ranks it in its top three close to its best.

    "Close" is at least half the best score: the reporter saw the scene, but a type the model barely
    considers is more likely a slip of the finger in the app's picker.
    """
    def routed(code: str) -> str | None:
        case_type = kb.taxonomy.get(code)
        return kb.routing.department_for(case_type, district=district) if case_type else None

    if result is not None:
        top_code, top_score = result.ranked[0]
        scores = dict(result.ranked[:3])
        mine = scores.get(requested) if requested else None
        if requested and requested != top_code and requested in scores and (
                mine is None or top_score is None or mine >= top_score / 2):
            return Suggestion(requested, routed(requested), mine)
        return Suggestion(top_code, result.department or routed(top_code), top_score)
    if requested:
        return Suggestion(requested, routed(requested), None)
    return Suggestion()


# --- Open311 submissions -----------------------------------------------------------------------------


@dataclass(slots=True)
class Open311Submission:
    """A validated POST requests body."""

    case_type: CaseType
    description: str
    lat: float | None
    lng: float | None
    address: str | None
    address_id: str | None
    attributes: dict[str, Any]
    email: str | None
    first_name: str | None
    last_name: str | None
    phone: str | None
    device_id: str | None
    account_id: str | None
    media_urls: list[str]

    @property
    def reporter_name(self) -> str | None:
        """姓 + 名, the Chinese order."""
        name = f"{self.last_name or ''}{self.first_name or ''}".strip()
        return name or None


Bounds = tuple[float, float, float, float]
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def parse_bounds(value: str | None) -> Bounds | None:
    """Read `lat_min,lng_min,lat_max,lng_max` (raises ValueError when malformed)."""
    if not value:
        return None
    parts = [float(p) for p in value.split(",")]
    if len(parts) != 4 or parts[0] >= parts[2] or parts[1] >= parts[3]:
        raise ValueError("INTAKE_OPEN311_BOUNDS must be lat_min,lng_min,lat_max,lng_max")
    return parts[0], parts[1], parts[2], parts[3]


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is None or isinstance(value, dict):
        return None
    text = str(value).strip()
    return text or None


def _number(fields: Mapping[str, Any], name: str, errors: list[str]) -> float | None:
    text = _text(fields, name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{name} 必须是数字（收到 {text[:20]}）")
        return None
    if not math.isfinite(value):
        errors.append(f"{name} 必须是有限的数字")
        return None
    return value


def parse_submission(
    fields: Mapping[str, Any], attributes: Mapping[str, Any], *, kb: KnowledgeBase, jurisdiction_id: str | None,
    bounds: Bounds | None, region: str,
) -> Open311Submission:
    """Validate a POST requests body; every problem is reported at once as Open311 400 errors."""
    errors: list[str] = []
    jurisdiction = _text(fields, "jurisdiction_id")
    if jurisdiction_id and jurisdiction and jurisdiction != jurisdiction_id:
        raise Open311Error(400, f"jurisdiction_id {jurisdiction[:32]} 不由本服务受理（本服务为 {jurisdiction_id}）",
                           error_id="wrong-jurisdiction")
    code = _text(fields, "service_code")
    case_type = kb.taxonomy.get(code) if code else None
    if code is None:
        errors.append("缺少必填参数 service_code（事项代码，见 GET services）")
    elif case_type is None:
        errors.append(f"service_code {code[:16]} 不存在，请用 GET services 查询可用的事项代码")

    lat, lng = _number(fields, "lat", errors), _number(fields, "long", errors)
    if (lat is None) != (lng is None) and not any(e.startswith(("lat", "long")) for e in errors):
        errors.append("lat 和 long 必须同时提供")
    elif lat is not None and lng is not None:
        if not (-90 <= lat <= 90) or not (-180 <= lng <= 180):
            errors.append(f"坐标无效：lat 应在 -90 到 90 之间，long 应在 -180 到 180 之间（收到 {lat}, {lng}）")
        elif bounds and not (bounds[0] <= lat <= bounds[2] and bounds[1] <= lng <= bounds[3]):
            errors.append(f"坐标 {lat}, {lng} 不在本市范围内，请检查是否把 lat 和 long 写反")
    address = _text(fields, "address_string")
    address_id = _text(fields, "address_id")
    if address and len(address) > 255:
        errors.append("address_string 不能超过 255 个字符")
    if address_id and len(address_id) > 64:
        errors.append("address_id 不能超过 64 个字符")
    has_point = lat is not None and lng is not None
    if not has_point and not address and not address_id and not any(e.startswith(("lat", "long", "坐标")) for e in errors):
        errors.append("请提供位置：lat 和 long，或 address_string（或 address_id）")

    description = _text(fields, "description") or ""
    if len(description) > MAX_DESCRIPTION:
        errors.append(f"description 不能超过 {MAX_DESCRIPTION} 个字符（收到 {len(description)} 个）")

    media_raw = fields.get("media_url")
    media_urls = [str(u).strip() for u in (media_raw if isinstance(media_raw, list) else [media_raw])
                  if u is not None and str(u).strip()]
    if len(media_urls) > 5:
        errors.append("media_url 最多 5 个")
    for url in media_urls:
        if len(url) > 1024 or not re.match(r"^https?://[^\s/]+", url):
            errors.append("media_url 必须是 http 或 https 地址（不超过 1024 个字符）")
            break

    email = _text(fields, "email")
    if email and (len(email) > 255 or not _EMAIL_RE.match(email)):
        errors.append("email 格式不正确")
    first_name, last_name = _text(fields, "first_name"), _text(fields, "last_name")
    for name, value in (("first_name", first_name), ("last_name", last_name)):
        if value and len(value) > 32:
            errors.append(f"{name} 不能超过 32 个字符")
    phone = _text(fields, "phone")
    if phone:
        try:
            phone = normalise_phone(phone, region=region)
        except InvalidPhone:
            errors.append("phone 不是有效的电话号码")
    device_id, account_id = _text(fields, "device_id"), _text(fields, "account_id")
    for name, value in (("device_id", device_id), ("account_id", account_id)):
        if value and len(value) > 128:
            errors.append(f"{name} 不能超过 128 个字符")

    clean: dict[str, Any] = {}
    if case_type is not None:
        clean, attr_errors = catalog.validate_attributes(case_type, attributes)
        errors.extend(attr_errors)
    if errors or case_type is None:
        raise Open311Error(400, errors, error_id="invalid-request")
    return Open311Submission(
        case_type=case_type, description=description, lat=lat, lng=lng, address=address, address_id=address_id,
        attributes=clean, email=email, first_name=first_name, last_name=last_name, phone=phone,
        device_id=device_id, account_id=account_id, media_urls=media_urls,
    )


def _fit(head: str, body: str, footer: list[str]) -> str:
    """Join head, body and footer within the draft's text limit, shortening only the body."""
    tail = "\n".join(footer)
    room = MAX_TEXT - len(head) - len(tail) - 1
    if len(body) > room:
        body = body[: max(0, room - 1)] + "…"
    return f"{head}{body}\n{tail}"


def open311_text(sub: Open311Submission, *, client_name: str) -> str:
    """The draft text an operator reads: the citizen's words, then what the app told us."""
    head = "【有人受伤或存在危险，请优先处理】\n" if catalog.is_urgent(sub.attributes) else ""
    footer = ["——", f"来源：开放接口（Open311）· {client_name}",
              f"上报人选择的事项：{sub.case_type.name}（{sub.case_type.code}）",
              *catalog.describe_answers(sub.case_type, sub.attributes)]
    if sub.address_id:
        footer.append(f"地址编号：{sub.address_id}")
    return _fit(head, sub.description or "（上报人未填写描述）", footer)


async def serialize(session: AsyncSession, key: str) -> None:
    """Make concurrent transactions about the same report take turns (PostgreSQL; SQLite has one writer).

    Two deliveries of one report must not both try to create its draft: the loser would fail its whole
    transaction on the unique source key instead of finding the winner's draft.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    lock_id = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
    await session.execute(select(func.pg_advisory_xact_lock(lock_id)))


async def _find_request(session: AsyncSession, client_id: int, kind: RequestKind,
                        external_id: str) -> ServiceRequest | None:
    return await session.scalar(select(ServiceRequest).where(
        ServiceRequest.client_id == client_id, ServiceRequest.kind == kind,
        ServiceRequest.external_id == external_id))


async def _insert_request(session: AsyncSession, req: ServiceRequest) -> ServiceRequest:
    """Insert the request row (callers hold the report's `serialize` lock, so no twin can race it)."""
    session.add(req)
    await session.flush()
    return req


async def submit_open311(
    *, session: AsyncSession, kb: KnowledgeBase, client: ApiClient, sub: Open311Submission, external_id: str | None,
    photos: Sequence[StoredPhoto], suggestion: Suggestion, region: str, ip: str | None,
) -> tuple[ServiceRequest, DraftCase, bool]:
    """Turn an Open311 request into a draft (once per client id); return the request, its draft and `created`.

    Without the client's own id (`Idempotency-Key`) every POST is a new report under a random id, so
    there is no twin to wait for or look up.
    """
    if external_id is not None:
        await serialize(session, f"o311:{client.id}:{external_id}")
        existing = await _find_request(session, client.id, RequestKind.OPEN311, external_id)
        if existing is not None:
            draft = await session.get(DraftCase, existing.draft_id)
            assert draft is not None
            return existing, draft, False
    else:
        external_id = "t-" + secrets.token_hex(16)
    media = [MediaItem(kind="photo", url=p.url, mime=p.mime) for p in photos]
    media += [MediaItem(kind="photo", url=url) for url in sub.media_urls]
    reporter = Reporter(name=sub.reporter_name, phone=sub.phone) if sub.reporter_name or sub.phone else None
    draft = await create_draft(session=session, kb=kb, region=region, data=DraftCreate(
        channel=Channel.API, text=open311_text(sub, client_name=client.name),
        source_key=f"o311:{client.id}:{external_id}", media=media,
        location=Location(lat=sub.lat, lng=sub.lng, address=sub.address), reporter=reporter,
        suggested_type_code=suggestion.code, suggested_department=suggestion.department,
        suggestion_confidence=suggestion.confidence,
    ))
    req = await _insert_request(session, ServiceRequest(
        client_id=client.id, kind=RequestKind.OPEN311, draft_id=draft.id, public_id=draft.number,
        external_id=external_id, service_code=sub.case_type.code, description=sub.description,
        attributes=sub.attributes, email=sub.email, first_name=sub.first_name, last_name=sub.last_name,
        device_id=sub.device_id, account_id=sub.account_id,
    ))
    await record(session=session, operator=None, actor=client.name, action="open311.request.create",
                 target_type="draft", target_id=draft.number, ip=ip,
                 details={"service_code": sub.case_type.code, "suggested": suggestion.code,
                          "photos": len(photos), "phone": mask_phone(sub.phone)})
    return req, draft, True


# --- reading requests ---------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestView:
    """A request with its draft and the case it became (or was merged into)."""

    req: ServiceRequest
    draft: DraftCase
    case: Case | None


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a request stands, in Open311 terms and in ours."""

    status: str  # "open" | "closed"
    key: str
    label: str
    notes: str
    updated: dt.datetime


def _visible(client: ApiClient) -> ColumnElement[bool]:
    if has_scope(client, Scope.READ_ALL):
        return ServiceRequest.id.is_not(None)
    return ServiceRequest.client_id == client.id


def _joined() -> Any:
    return (select(ServiceRequest, DraftCase, Case)
            .join(DraftCase, DraftCase.id == ServiceRequest.draft_id)
            .outerjoin(Case, or_(Case.draft_id == DraftCase.id, Case.id == DraftCase.merged_into_case_id)))


def _closed() -> ColumnElement[bool]:
    return or_(DraftCase.status.in_((DraftStatus.REJECTED, DraftStatus.ANSWERED)),
               and_(Case.id.is_not(None), Case.state.in_((CaseState.CLOSED, CaseState.REJECTED))))


def parse_time(value: str | None, name: str) -> dt.datetime | None:
    """Read an ISO 8601 filter time (a time without zone is 北京时间)."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as err:
        raise Open311Error(400, f"{name} 不是 ISO 8601 时间（例如 2026-11-22T08:00:00+08:00）",
                           error_id="invalid-date") from err
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=LOCAL_TZ)).astimezone(dt.UTC)


async def list_requests(
    *, session: AsyncSession, client: ApiClient, now: dt.datetime, ids: Sequence[str] = (),
    codes: Sequence[str] = (), start: dt.datetime | None = None, end: dt.datetime | None = None,
    statuses: Sequence[str] = (), limit: int = MAX_RESULTS,
) -> list[RequestView]:
    """GET requests: by ids (which override every other filter), else by code, status and a ≤ 90-day window."""
    stmt = _joined().where(_visible(client))
    if ids:
        stmt = stmt.where(or_(ServiceRequest.public_id.in_(ids), Case.number.in_(ids)))
    else:
        if start and end and end - start > MAX_SPAN:
            raise Open311Error(400, "start_date 与 end_date 相隔不能超过 90 天", error_id="date-range")
        if start is None and end is None:
            end = now
        if start is None:
            assert end is not None
            start = end - MAX_SPAN
        if end is None:
            end = start + MAX_SPAN
        if end < start:
            raise Open311Error(400, "end_date 早于 start_date", error_id="date-range")
        stmt = stmt.where(ServiceRequest.created_at >= start, ServiceRequest.created_at <= end)
        if codes:
            stmt = stmt.where(func.coalesce(Case.case_type_code, ServiceRequest.service_code).in_(codes))
        wanted = set(statuses)
        if wanted - {"open", "closed"}:
            raise Open311Error(400, "status 只能是 open 或 closed（可用逗号分隔）", error_id="invalid-status")
        if wanted == {"open"}:
            stmt = stmt.where(~_closed())
        elif wanted == {"closed"}:
            stmt = stmt.where(_closed())
    rows = await session.execute(
        stmt.order_by(ServiceRequest.created_at.desc(), ServiceRequest.id.desc()).limit(min(limit, MAX_RESULTS)))
    return [RequestView(req, draft, case) for req, draft, case in rows.all()]


async def find_request(*, session: AsyncSession, client: ApiClient, ident: str) -> RequestView | None:
    """Return a visible request by its id (the draft number) or the case number it became."""
    ident = ident.strip()[:32]
    rows = await session.execute(_joined().where(_visible(client))
                                 .where(or_(ServiceRequest.public_id == ident, Case.number == ident))
                                 .order_by(ServiceRequest.id).limit(1))
    row = rows.first()
    return RequestView(row[0], row[1], row[2]) if row else None


def _events(view: RequestView, events: Sequence[CaseEvent] | None) -> list[CaseEvent]:
    if view.case is None:
        return []
    chosen = view.case.events if events is None else events
    return sorted(chosen, key=lambda e: (e.at, e.id))


def _step_text(step: Step, case: Case, kb: KnowledgeBase) -> str:
    department = kb.routing.department_name(case.department)
    if step == Step.COLLECT:
        return "已收到，等待受理"
    if step == Step.REGISTER:
        text = f"已立案，案件编号 {case.number}"
        if department:
            text += f"，承办单位：{department}"
        if case.deadline_at:
            text += f"，处置时限：{case.deadline_at.astimezone(LOCAL_TZ):%m月%d日%H:%M}"
        return text
    if step == Step.DISPATCH:
        return f"已派遣至{department}" if department else "已派遣至承办单位"
    return {
        Step.HANDLE: "承办单位正在处置",
        Step.FEEDBACK: "承办单位已反馈处置结果，等待核查",
        Step.VERIFY: "指挥中心已核查",
        Step.CLOSE: "已办结",
        Step.RATE: "已办结并完成评价",
    }[step]


def _with_note(text: str, note: str | None, step: Step) -> str:
    if not note or note.strip() in (STEP_LABELS[step], "信息采集", "立案") or note.strip() in text:
        return text
    return f"{text}。{note.strip()[:200]}"


def progress(view: RequestView, *, kb: KnowledgeBase, events: Sequence[CaseEvent] | None = None) -> Progress:
    """Work out the Open311 status, our step and a Chinese note for the request."""
    draft, case = view.draft, view.case
    if draft.status == DraftStatus.REJECTED:
        return Progress("closed", "rejected", "不予立案", f"不予立案：{draft.reject_reason or '不属于受理范围'}",
                        draft.updated_at)
    if draft.status == DraftStatus.ANSWERED:
        return Progress("closed", "answered", "已答复", f"已答复：{draft.reject_reason or ''}".rstrip("："),
                        draft.updated_at)
    if case is None:
        return Progress("open", "received", "待受理", "已收到，等待受理员审核", draft.updated_at)
    prefix = f"已并入案件 {case.number or ''}（同一问题已有人上报）。" if draft.status == DraftStatus.MERGED else ""
    if case.state == CaseState.SUBMITTING:
        return Progress("open", "accepted", "已受理", prefix + "已受理，正在立案", case.updated_at)
    if case.state == CaseState.REJECTED:
        return Progress("closed", "rejected", "不予立案", prefix + "工作流平台未予立案", case.updated_at)
    timeline = _events(view, events)
    latest = next((e for e in reversed(timeline) if e.step == case.step), None)
    notes = _with_note(_step_text(case.step, case, kb), latest.note if latest else None, case.step)
    status = "closed" if case.state == CaseState.CLOSED else "open"
    return Progress(status, case.step.value, STEP_LABELS[case.step], prefix + notes, case.updated_at)


def absolute(url: str, base_url: str) -> str:
    """Make a media path served by us absolute."""
    return base_url.rstrip("/") + url if url.startswith("/") else url


def represent(view: RequestView, *, kb: KnowledgeBase, base_url: str,
              events: Sequence[CaseEvent] | None = None) -> dict[str, Any]:
    """Render a request as a GeoReport v2 service request (plus our case number and step)."""
    req, draft, case = view.req, view.draft, view.case
    code = case.case_type_code if case else (req.service_code or draft.suggested_type_code)
    case_type = kb.taxonomy.get(code) if code else None
    state = progress(view, kb=kb, events=events)
    media = [absolute(str(m["url"]), base_url) for m in draft.media if isinstance(m, dict) and m.get("url")]
    return {
        "service_request_id": req.public_id,
        "status": state.status,
        "status_notes": state.notes,
        "service_name": case_type.name if case_type else None,
        "service_code": code,
        "description": req.description or draft.raw_text,
        "agency_responsible": kb.routing.department_name(case.department) if case else None,
        "service_notice": None,
        "requested_datetime": iso(req.created_at),
        "updated_datetime": iso(state.updated),
        "expected_datetime": iso(case.deadline_at) if case else None,
        "address": (case.address if case else None) or draft.address,
        "address_id": None,
        "zipcode": None,
        "lat": (case.lat if case else None) or draft.lat,
        "long": (case.lng if case else None) or draft.lng,
        "media_url": media[0] if media else None,
        "media_urls": media,
        "case_number": case.number if case else None,
        "step": state.key,
        "step_label": state.label,
    }


def updates(view: RequestView, *, kb: KnowledgeBase, base_url: str,
            events: Sequence[CaseEvent] | None = None) -> list[dict[str, Any]]:
    """Every step of the request, oldest first: received, then each timeline entry of its case."""
    req, draft, case = view.req, view.draft, view.case
    sid = req.public_id

    def entry(uid: str, status: str, key: str, label: str, text: str, at: dt.datetime,
              attachments: Sequence[Any] = ()) -> dict[str, Any]:
        urls = [absolute(str(a["url"]), base_url) for a in attachments if isinstance(a, dict) and a.get("url")]
        return {"update_id": f"{sid}-{uid}", "service_request_id": sid, "status": status, "step": key,
                "step_label": label, "description": text, "updated_datetime": iso(at),
                "media_url": urls[0] if urls else None, "media_urls": urls}

    result = [entry("r", "open", "received", "已接收", "已收到您的上报，等待受理员审核", req.created_at)]
    if draft.status == DraftStatus.REJECTED:
        result.append(entry("x", "closed", "rejected", "不予立案",
                            f"不予立案：{draft.reject_reason or '不属于受理范围'}", draft.updated_at))
        return result
    if draft.status == DraftStatus.ANSWERED:
        result.append(entry("x", "closed", "answered", "已答复", f"已答复：{draft.reject_reason or ''}",
                            draft.updated_at))
        return result
    if case is None:
        return result
    if draft.status == DraftStatus.MERGED:
        result.append(entry("m", "open", "merged", "已合并",
                            f"同一问题已有人上报，已并入案件 {case.number or ''}，随该案件一并处理", draft.updated_at))
    timeline = [e for e in _events(view, events) if e.step != Step.COLLECT]
    if not timeline:
        result.append(entry("a", "open", "accepted", "已受理", "已受理，正在立案", case.created_at))
    for event in timeline:
        closed = event.step in (Step.CLOSE, Step.RATE)
        text = _with_note(_step_text(event.step, case, kb) if event.step != Step.REGISTER
                          else f"已立案，案件编号 {case.number or ''}", event.note, event.step)
        result.append(entry(f"e{event.id}", "closed" if closed else "open", event.step.value,
                            STEP_LABELS[event.step], text, event.at, event.attachments))
    return result


async def updates_since(*, session: AsyncSession, client: ApiClient, kb: KnowledgeBase, base_url: str,
                        start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Every update of the client's requests in a time window (for clients that poll instead of webhooks)."""
    rows = await session.execute(_joined().where(_visible(client)).where(
        or_(DraftCase.updated_at >= start, Case.updated_at >= start)).order_by(ServiceRequest.id).limit(MAX_RESULTS))
    found: list[dict[str, Any]] = []
    for req, draft, case in rows.all():
        for item in updates(RequestView(req, draft, case), kb=kb, base_url=base_url):
            at = dt.datetime.fromisoformat(str(item["updated_datetime"]))
            if start <= at <= end:
                found.append(item)
    found.sort(key=lambda item: str(item["updated_datetime"]))
    return found[:MAX_RESULTS]


# --- 12345 work orders --------------------------------------------------------------------------------


def category_code(kb: KnowledgeBase, category: str | None) -> str | None:
    """Map a 12345 category to one of our case types: our own code, or the longest type name it contains."""
    if not category:
        return None
    if re.fullmatch(r"\d{5}", category) and kb.taxonomy.get(category):
        return category
    names = sorted(kb.taxonomy.types.values(), key=lambda t: len(t.name), reverse=True)
    bare = [(t, t.name.removesuffix("异常")) for t in names]
    found = next((t.code for t, name in bare if len(name) >= 2 and name in category), None)
    return found


def transfer_text(order: TransferOrder, *, client_name: str) -> str:
    """The draft text of a 12345 order: content first, then the order's facts."""
    head = f"【12345转办】工单号 {order.order_id}\n" + ("【紧急】\n" if order.urgent else "")
    footer = ["——", f"来源：12345 转办（{client_name}）"]
    if order.category:
        footer.append(f"诉求分类：{order.category}")
    if order.deadline:
        footer.append(f"12345 办结时限：{order.deadline.astimezone(LOCAL_TZ):%Y年%m月%d日 %H:%M}")
    if order.caller and order.caller.name:
        footer.append(f"来电人：{order.caller.name}")
    return _fit(head, order.content, footer)


async def receive_order(
    *, session: AsyncSession, kb: KnowledgeBase, client: ApiClient, order: TransferOrder, suggestion: Suggestion,
    region: str, ip: str | None,
) -> tuple[ServiceRequest, DraftCase, bool]:
    """Turn a 12345 order into a draft once, however often it is delivered."""
    await serialize(session, f"12345:{client.id}:{order.order_id}")
    existing = await _find_request(session, client.id, RequestKind.TRANSFER_12345, order.order_id)
    if existing is not None:
        draft = await session.get(DraftCase, existing.draft_id)
        assert draft is not None
        await record(session=session, operator=None, actor=client.name, action="transfer12345.order.repeat",
                     target_type="draft", target_id=existing.public_id, ip=ip, details={"order_id": order.order_id})
        return existing, draft, False
    caller = order.caller
    reporter = Reporter(name=caller.name, phone=caller.phone) if caller and (caller.name or caller.phone) else None
    draft = await create_draft(session=session, kb=kb, region=region, data=DraftCreate(
        channel=Channel.TRANSFER_12345, text=transfer_text(order, client_name=client.name),
        source_key=f"12345:{client.id}:{order.order_id}",
        media=[MediaItem(kind=a.kind, url=a.url) for a in order.attachments],
        location=Location(lat=order.lat, lng=order.lng, address=order.address, district=order.district),
        reporter=reporter, suggested_type_code=suggestion.code, suggested_department=suggestion.department,
        suggestion_confidence=suggestion.confidence,
    ))
    req = await _insert_request(session, ServiceRequest(
        client_id=client.id, kind=RequestKind.TRANSFER_12345, draft_id=draft.id, public_id=draft.number,
        external_id=order.order_id, service_code=category_code(kb, order.category), description=order.content,
        external_category=order.category, callback_url=order.callback_url, due_at=order.deadline,
        attributes={"urgent": order.urgent},
    ))
    await record(session=session, operator=None, actor=client.name, action="transfer12345.order",
                 target_type="draft", target_id=req.public_id, ip=ip,
                 details={"order_id": order.order_id, "phone": mask_phone(caller.phone if caller else None)})
    return req, draft, True


def order_status(view: RequestView, *, kb: KnowledgeBase) -> tuple[str, str]:
    """Our step key and its Chinese label for a 12345 order."""
    state = progress(view, kb=kb)
    return state.key, state.label


# --- machine alarms --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlarmOutcome:
    """What happened to one alarm."""

    status: str
    incident: AlarmIncident | None
    request: ServiceRequest | None


def alarm_identity(client_id: int, alarm: Alarm) -> tuple[str, str, str]:
    """Return (key, type label, place label): same source + type + place is the same ongoing alarm."""
    known = catalog.alarm_type(alarm.type)
    type_key = known.key if known else alarm.type.strip().lower()
    loc = alarm.location
    if loc.point_id:
        place_key = f"p:{loc.point_id}"
    elif loc.lat is not None and loc.lng is not None:
        place_key = f"g:{loc.lat:.4f},{loc.lng:.4f}"  # about 10 m: the same spot for a fixed sensor
    else:
        place_key = "a:" + re.sub(r"\s+", "", loc.address or "")
    key = hashlib.sha256(f"{client_id}\x1f{alarm.source}\x1f{type_key}\x1f{place_key}".encode()).hexdigest()[:40]
    parts = [loc.address or ""]
    if loc.point_id:
        parts.append(f"（监测点 {loc.point_id}）")
    if not loc.address and loc.lat is not None and loc.lng is not None:
        parts.append(f"坐标 {loc.lat:.5f}, {loc.lng:.5f}")
    label = known.label if known else alarm.type
    return key, label, "".join(parts)[:255] or "未知地点"


def _value_text(value: float | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)[:64]


def alarm_text(incident: AlarmIncident, *, type_label: str, note: str | None) -> str:
    """The draft text of an alarm incident, rewritten as repeats arrive."""
    def local(at: dt.datetime) -> str:
        return f"{at.astimezone(LOCAL_TZ):%Y-%m-%d %H:%M:%S}"

    lines = [f"【监测告警】{incident.source}：{type_label}", f"地点：{incident.place}"]
    if incident.last_value is not None:
        lines.append(f"最新告警值：{incident.last_value}{incident.unit or ''}（{local(incident.last_at)}）")
    if incident.level:
        lines.append(f"告警级别：{incident.level}")
    lines.append(f"首次告警：{local(incident.first_at)}；最近告警：{local(incident.last_at)}；累计 {incident.count} 次")
    if incident.resolved_at:
        lines.append(f"监测系统报告已于 {local(incident.resolved_at)} 恢复")
    if note:
        lines.append(f"说明：{note}")
    return "\n".join(lines)[:MAX_TEXT]


async def _incident_open(session: AsyncSession, incident: AlarmIncident, at: dt.datetime,
                         window: dt.timedelta) -> bool:
    """An incident is ongoing until resolved, silent for a window, or its case is closed."""
    if incident.resolved_at is not None or at - incident.last_at > window:
        return False
    req = await session.get(ServiceRequest, incident.request_id)
    if req is None:
        return False
    state = await session.scalar(select(Case.state).where(Case.draft_id == req.draft_id))
    return state not in (CaseState.CLOSED, CaseState.REJECTED)


async def latest_incident(*, session: AsyncSession, client_id: int, key: str,
                          lock: bool = False) -> AlarmIncident | None:
    """Return the newest incident of an alarm identity."""
    stmt = (select(AlarmIncident).where(AlarmIncident.client_id == client_id, AlarmIncident.alarm_key == key)
            .order_by(AlarmIncident.generation.desc()).limit(1))
    if lock:
        stmt = stmt.with_for_update()
    return await session.scalar(stmt)


async def alarm_needs_new_draft(*, session: AsyncSession, client: ApiClient, alarm: Alarm, now: dt.datetime,
                                window: dt.timedelta) -> bool:
    """Tell (without locking) whether this alarm would open a new incident: only then is a suggestion needed."""
    key, _label, _place = alarm_identity(client.id, alarm)
    latest = await latest_incident(session=session, client_id=client.id, key=key)
    return latest is None or not await _incident_open(session, latest, alarm.time or now, window)


async def _count_repeat(session: AsyncSession, incident: AlarmIncident, alarm: Alarm, at: dt.datetime,
                        type_label: str) -> AlarmIncident:
    """Add one to an ongoing incident (in SQL, so concurrent repeats are never lost) and refresh its draft."""
    values: dict[str, Any] = {"count": AlarmIncident.count + 1, "updated_at": utcnow()}
    if at >= incident.last_at:
        values.update(last_at=at, last_value=_value_text(alarm.value), unit=alarm.unit or incident.unit,
                      level=alarm.level or incident.level)
    await session.execute(update(AlarmIncident).where(AlarmIncident.id == incident.id).values(**values))
    await session.refresh(incident)
    await _refresh_alarm_draft(session, incident, type_label=type_label, note=alarm.text)
    return incident


async def _refresh_alarm_draft(session: AsyncSession, incident: AlarmIncident, *, type_label: str,
                               note: str | None) -> None:
    req = await session.get(ServiceRequest, incident.request_id)
    draft = await session.get(DraftCase, req.draft_id) if req else None
    if draft is not None and draft.status in (DraftStatus.DRAFT, DraftStatus.PENDING_REVIEW):
        draft.raw_text = alarm_text(incident, type_label=type_label, note=note)
        emit(session, "draft.updated", {"draft_id": draft.id, "number": draft.number, "alarm_count": incident.count})


async def receive_alarm(
    *, session: AsyncSession, kb: KnowledgeBase, client: ApiClient, alarm: Alarm, now: dt.datetime,
    window: dt.timedelta, suggestion: Suggestion, ip: str | None,
) -> AlarmOutcome:
    """Count the alarm into its ongoing incident, or open a new incident with one draft."""
    if alarm.alarm_id:
        seen = ProcessedKey(scope="open311-alarm", key=f"{client.id}:{alarm.alarm_id}"[:128])
        try:
            async with session.begin_nested():
                session.add(seen)
                await session.flush()
        except IntegrityError:
            prior = await session.scalar(select(ProcessedKey).where(ProcessedKey.scope == "open311-alarm",
                                                                    ProcessedKey.key == seen.key))
            incident = await session.get(AlarmIncident, int(prior.result.get("incident_id") or 0)) if prior else None
            return AlarmOutcome("duplicate", incident, None)
    key, type_label, place = alarm_identity(client.id, alarm)
    at = alarm.time or now
    await serialize(session, f"alarm:{key}")
    latest = await latest_incident(session=session, client_id=client.id, key=key, lock=True)
    ongoing = latest is not None and await _incident_open(session, latest, at, window)
    if alarm.state == "resolved":
        if latest is None or not ongoing:
            outcome = AlarmOutcome("ignored", latest, None)
        else:
            latest.resolved_at = at
            await _refresh_alarm_draft(session, latest, type_label=type_label, note=alarm.text)
            outcome = AlarmOutcome("resolved", latest, await session.get(ServiceRequest, latest.request_id))
    elif latest is not None and ongoing:
        incident = await _count_repeat(session, latest, alarm, at, type_label)
        outcome = AlarmOutcome("updated", incident, await session.get(ServiceRequest, incident.request_id))
    else:
        outcome = await _open_incident(session=session, kb=kb, client=client, alarm=alarm, key=key, at=at,
                                       generation=(latest.generation + 1) if latest else 1, type_label=type_label,
                                       place=place, suggestion=suggestion)
    if outcome.incident is not None and alarm.alarm_id:
        await session.execute(update(ProcessedKey).where(
            ProcessedKey.scope == "open311-alarm", ProcessedKey.key == f"{client.id}:{alarm.alarm_id}"[:128]
        ).values(result={"incident_id": outcome.incident.id}))
    await record(session=session, operator=None, actor=client.name, action=f"alarm.{outcome.status}",
                 target_type="alarm", target_id=str(outcome.incident.id) if outcome.incident else None, ip=ip,
                 details={"source": alarm.source, "type": alarm.type,
                          "count": outcome.incident.count if outcome.incident else 0})
    return outcome


async def _open_incident(
    *, session: AsyncSession, kb: KnowledgeBase, client: ApiClient, alarm: Alarm, key: str, at: dt.datetime,
    generation: int, type_label: str, place: str, suggestion: Suggestion,
) -> AlarmOutcome:
    external = f"{key}:{generation}"
    incident = AlarmIncident(
        client_id=client.id, alarm_key=key, generation=generation, source=alarm.source, alarm_type=alarm.type,
        place=place, count=1, first_at=at, last_at=at, last_value=_value_text(alarm.value), unit=alarm.unit,
        level=alarm.level,
    )
    loc = alarm.location
    draft = await create_draft(session=session, kb=kb, data=DraftCreate(
        channel=Channel.ALARM, text=alarm_text(incident, type_label=type_label, note=alarm.text),
        source_key=f"alarm:{client.id}:{external}"[:128],
        location=Location(lat=loc.lat, lng=loc.lng, address=loc.address, district=loc.district),
        suggested_type_code=suggestion.code, suggested_department=suggestion.department,
        suggestion_confidence=suggestion.confidence,
    ))
    req = await _insert_request(session, ServiceRequest(
        client_id=client.id, kind=RequestKind.ALARM, draft_id=draft.id, public_id=draft.number, external_id=external,
        service_code=suggestion.code, description=alarm.text or f"{alarm.source}：{type_label}",
        attributes={"source": alarm.source, "type": alarm.type, "point_id": loc.point_id},
    ))
    incident.request_id = req.id
    session.add(incident)
    await session.flush()
    return AlarmOutcome("created", incident, req)


# --- status webhooks and 12345 callbacks ------------------------------------------------------------------


async def enqueue_delivery(
    *, session: AsyncSession, client: ApiClient, req: ServiceRequest | None, event: str, url: str,
    payload: dict[str, Any], dedupe_key: str,
) -> WebhookDelivery:
    """Log a delivery and queue it in the caller's transaction (once per dedupe key)."""
    existing = await session.scalar(select(WebhookDelivery).where(WebhookDelivery.dedupe_key == dedupe_key))
    if existing is not None:
        return existing
    delivery = WebhookDelivery(dedupe_key=dedupe_key[:128], client_id=client.id, request_id=req.id if req else None,
                               event=event, url=url, payload=payload)
    session.add(delivery)
    await session.flush()
    await enqueue(session=session, kind=DELIVERY_KIND, payload={"delivery_id": delivery.id},
                  idempotency_key=f"open311-delivery:{delivery.id}",
                  ordering_key=f"o311:{client.id}:{req.id if req else 0}")
    return delivery


def transfer_result(view: RequestView, *, kb: KnowledgeBase, code: str,
                    events: Sequence[CaseEvent] = ()) -> dict[str, Any]:
    """The result reported back to 12345: 办结 with the handling record, 退回 with the reason, or 已答复."""
    req, draft, case = view.req, view.draft, view.case
    labels = {"closed": "办结", "rejected": "退回", "answered": "已答复"}
    timeline = [{"step": e.step.value, "step_label": STEP_LABELS[e.step], "at": iso(e.at), "note": e.note}
                for e in sorted(events, key=lambda e: (e.at, e.id))]
    if code == "closed":
        # The handling result (反馈) and the centre's check (核查) are what 12345 tells the caller.
        last = {e.step: e.note.strip() for e in sorted(events, key=lambda e: (e.at, e.id))
                if e.note and e.note.strip() != STEP_LABELS[e.step]}
        note = "；".join(n for n in (last.get(Step.FEEDBACK), last.get(Step.VERIFY)) if n) or "已办结"
    else:
        note = draft.reject_reason or ("不属于城市管理受理范围" if code == "rejected" else "")
    closed_at = (case.closed_at if case and code == "closed" else None) or draft.updated_at
    return {
        "event": RESULT_EVENT,
        "order_id": req.external_id,
        "draft_number": req.public_id,
        "case_number": case.number if case else None,
        "result": labels[code],
        "result_code": code,
        "result_note": note,
        "department": kb.routing.department_name(case.department) if case else None,
        "closed_at": iso(closed_at),
        "deadline": iso(req.due_at),
        "within_deadline": (closed_at <= req.due_at) if req.due_at else None,
        "timeline": timeline,
    }


async def _case_events(session: AsyncSession, case_id: int) -> list[CaseEvent]:
    return list(await session.scalars(select(CaseEvent).where(CaseEvent.case_id == case_id)
                                      .order_by(CaseEvent.at, CaseEvent.id)))


async def on_case_step(*, session: AsyncSession, case: Case, step: Step, seq: int, kb: KnowledgeBase,
                       base_url: str) -> None:
    """Queue webhooks (and the 12345 result on 结案) for requests that became or were merged into this case."""
    rows = (await session.execute(
        select(ServiceRequest, DraftCase).join(DraftCase, DraftCase.id == ServiceRequest.draft_id)
        .where(or_(DraftCase.id == case.draft_id, DraftCase.merged_into_case_id == case.id)))).all()
    if not rows:
        return
    events = await _case_events(session, case.id)
    for req, draft in rows:
        client = await session.get(ApiClient, req.client_id)
        if client is None or not client.active:
            continue
        view = RequestView(req, draft, case)
        if client.webhook_url:
            payload = {"event": STATUS_EVENT, "seq": seq, **represent(view, kb=kb, base_url=base_url, events=events)}
            await enqueue_delivery(session=session, client=client, req=req, event=STATUS_EVENT,
                                   url=client.webhook_url, payload=payload,
                                   dedupe_key=f"status:{req.id}:{case.id}:{seq}")
        if req.kind == RequestKind.TRANSFER_12345 and step == Step.CLOSE and req.callback_url:
            await enqueue_delivery(session=session, client=client, req=req, event=RESULT_EVENT, url=req.callback_url,
                                   payload=transfer_result(view, kb=kb, code="closed", events=events),
                                   dedupe_key=f"result:{req.id}:{case.id}:{seq}")


async def sweep_closed_drafts(*, session: AsyncSession, kb: KnowledgeBase, base_url: str, limit: int = 200) -> int:
    """Notify clients of drafts closed without a workflow step (不予立案, 已答复, 合并); return how many."""
    stmt = (select(ServiceRequest, DraftCase).join(DraftCase, DraftCase.id == ServiceRequest.draft_id)
            .where(DraftCase.status.in_(CLOSED_WITHOUT_STEP), ServiceRequest.seen_draft_status != DraftCase.status)
            .order_by(ServiceRequest.id).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(of=ServiceRequest, skip_locked=True)
    rows = (await session.execute(stmt)).all()
    for req, draft in rows:
        req.seen_draft_status = draft.status
        client = await session.get(ApiClient, req.client_id)
        if client is None or not client.active:
            continue
        case = await session.get(Case, draft.merged_into_case_id) if draft.merged_into_case_id else None
        view = RequestView(req, draft, case if draft.status == DraftStatus.MERGED else None)
        if client.webhook_url:
            payload = {"event": STATUS_EVENT, "seq": 0, **represent(view, kb=kb, base_url=base_url)}
            await enqueue_delivery(session=session, client=client, req=req, event=STATUS_EVENT,
                                   url=client.webhook_url, payload=payload,
                                   dedupe_key=f"status:{req.id}:draft:{draft.status.value}")
        if req.kind != RequestKind.TRANSFER_12345 or not req.callback_url:
            continue
        if draft.status in (DraftStatus.REJECTED, DraftStatus.ANSWERED):
            code = "rejected" if draft.status == DraftStatus.REJECTED else "answered"
            await enqueue_delivery(session=session, client=client, req=req, event=RESULT_EVENT, url=req.callback_url,
                                   payload=transfer_result(view, kb=kb, code=code),
                                   dedupe_key=f"result:{req.id}:draft:{code}")
        elif case is not None and case.state == CaseState.CLOSED:
            # Merged into a case that is already closed: its 结案 step will not come again.
            await enqueue_delivery(session=session, client=client, req=req, event=RESULT_EVENT, url=req.callback_url,
                                   payload=transfer_result(view, kb=kb, code="closed",
                                                           events=await _case_events(session, case.id)),
                                   dedupe_key=f"result:{req.id}:{case.id}:merged")
    return len(rows)


async def send_ping(*, session: AsyncSession, client: ApiClient, now: dt.datetime) -> WebhookDelivery:
    """Queue a test delivery to the client's webhook."""
    if not client.webhook_url:
        raise Conflict("尚未设置 webhook_url", error_id="no-webhook")
    return await enqueue_delivery(session=session, client=client, req=None, event=PING_EVENT, url=client.webhook_url,
                                  payload={"event": PING_EVENT, "sent_at": iso(now), "client": client.name},
                                  dedupe_key=f"ping:{client.id}:{secrets.token_hex(8)}")


def signed_headers(*, secret: str, body: bytes, event: str, delivery_id: int, now: float) -> dict[str, str]:
    """Headers of a delivery: HMAC-SHA256 over `timestamp.body` (the scheme of core/workflow/http.py)."""
    timestamp = str(int(now))
    return {
        "Content-Type": "application/json; charset=utf-8",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
        "X-Intake-Event": event,
        "X-Intake-Delivery": str(delivery_id),
        "Idempotency-Key": f"delivery-{delivery_id}",
    }


async def _log_attempt(
    sessions: async_sessionmaker[AsyncSession], delivery_id: int, *, url: str, status_code: int | None,
    error: str | None, duration_ms: int, delivered: bool, final_failure: bool, max_attempts: int,
) -> DeliveryStatus:
    """Write the attempt and the delivery's new state; return that state."""
    async with sessions() as session, session.begin():
        row = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
        assert row is not None
        row.attempts += 1
        row.url, row.last_status_code, row.last_error = url, status_code, (error or None) and error[:255]
        if delivered:
            row.status, row.delivered_at = DeliveryStatus.DELIVERED, utcnow()
        elif final_failure or row.attempts >= max_attempts:
            row.status = DeliveryStatus.FAILED
        session.add(DeliveryAttempt(delivery_id=delivery_id, status_code=status_code,
                                    error=(error or None) and error[:255], duration_ms=duration_ms))
        return row.status


async def run_delivery(*, sessions: async_sessionmaker[AsyncSession], sender: WebhookSender, delivery_id: int,
                       max_attempts: int) -> None:
    """Outbox handler: sign and POST one delivery, log the attempt, and tell the outbox whether to retry."""
    async with sessions() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        client = await session.get(ApiClient, delivery.client_id) if delivery else None
    if delivery is None or client is None:
        raise PermanentFailure("delivery vanished")
    if delivery.status != DeliveryStatus.PENDING:
        return
    url = delivery.url if delivery.event == RESULT_EVENT else (client.webhook_url or "")
    refusal = "接口客户端已停用" if not client.active else ("已取消 webhook 订阅" if not url else None)
    if refusal:
        await _log_attempt(sessions, delivery_id, url=url or delivery.url, status_code=None, error=refusal,
                           duration_ms=0, delivered=False, final_failure=True, max_attempts=max_attempts)
        raise PermanentFailure(refusal)
    body = json.dumps(delivery.payload, ensure_ascii=False, separators=(",", ":")).encode()
    headers = signed_headers(secret=client.signing_secret, body=body, event=delivery.event, delivery_id=delivery_id,
                             now=time.time())
    try:
        result = await sender.post(url, body=body, headers=headers)
    except DeliveryError as err:
        state = await _log_attempt(sessions, delivery_id, url=url, status_code=err.status_code, error=str(err),
                                   duration_ms=err.duration_ms, delivered=False, final_failure=not err.temporary,
                                   max_attempts=max_attempts)
        if state == DeliveryStatus.FAILED:
            raise PermanentFailure(str(err)) from err
        raise TemporaryFailure(str(err)) from err
    await _log_attempt(sessions, delivery_id, url=url, status_code=result.status_code, error=None,
                       duration_ms=result.duration_ms, delivered=True, final_failure=False, max_attempts=max_attempts)


async def retry_delivery(*, session: AsyncSession, delivery: WebhookDelivery, operator: Operator | None) -> None:
    """Send a failed delivery again from the start (after the receiver was fixed)."""
    if delivery.status != DeliveryStatus.FAILED:
        raise Conflict("只有失败的投递可以重发", error_id="delivery-not-failed")
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    await enqueue(session=session, kind=DELIVERY_KIND, payload={"delivery_id": delivery.id},
                  idempotency_key=f"open311-delivery:{delivery.id}:retry:{secrets.token_hex(6)}",
                  ordering_key=f"o311:{delivery.client_id}:{delivery.request_id or 0}")
    await record(session=session, operator=operator, action="open311.delivery.retry", target_type="delivery",
                 target_id=str(delivery.id))


async def list_deliveries(*, session: AsyncSession, client_id: int | None, limit: int = 50,
                          status: DeliveryStatus | None = None) -> list[tuple[WebhookDelivery, str | None]]:
    """The newest deliveries (of one client, or all), with the request id each concerns."""
    stmt = (select(WebhookDelivery, ServiceRequest.public_id)
            .outerjoin(ServiceRequest, ServiceRequest.id == WebhookDelivery.request_id))
    if client_id is not None:
        stmt = stmt.where(WebhookDelivery.client_id == client_id)
    if status is not None:
        stmt = stmt.where(WebhookDelivery.status == status)
    rows = await session.execute(stmt.order_by(WebhookDelivery.id.desc()).limit(limit))
    return [(delivery, public_id) for delivery, public_id in rows.all()]
