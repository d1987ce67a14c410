"""The open intake API: Open311 GeoReport v2 under /open311/v2, 12345 orders, alarms, key administration."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from sqlalchemy import select
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.audit import record
from core.context import AppContext
from core.deps import Ctx, CurrentLogin, require_role
from core.errors import AppError, NotFound, error_body
from core.open311 import catalog, media, service
from core.open311.formats import Open311Error, check_format, render, render_error
from core.open311.models import (
    AlarmIncident,
    ApiClient,
    DeliveryStatus,
    RequestKind,
    Scope,
    ServiceRequest,
    WebhookDelivery,
)
from core.open311.schemas import (
    Alarm,
    AlarmResult,
    ClientCreate,
    ClientCreated,
    ClientRead,
    DeliveryRead,
    Subscription,
    TransferAccepted,
    TransferOrder,
)
from core.open311.wiring import runtime_of

log = logging.getLogger(__name__)
router = APIRouter()

SPEC_URL = "http://wiki.open311.org/GeoReport_v2"
CHANGESET = "2026-11-22T00:00:00+08:00"
_ATTRIBUTE_RE = re.compile(r"^attributes?\[([^\]]{1,64})\](\[\])?$")
_IDEMPOTENCY_RE = re.compile(r"^[\x21-\x7e]{1,100}$")
TAG = "Open311 GeoReport v2"


# --- helpers -----------------------------------------------------------------------------------------


class GateError(Exception):
    """A request refused before its content is looked at: bad key, wrong scope, over the limits."""

    def __init__(self, status: int, message: str, error_id: str, headers: Mapping[str, str] | None = None) -> None:
        """Keep what both error shapes (Open311 and ours) need."""
        super().__init__(message)
        self.status, self.message, self.error_id, self.headers = status, message, error_id, dict(headers or {})

    def open311(self) -> Open311Error:
        """As an Open311 error list."""
        return Open311Error(self.status, self.message, headers=self.headers, error_id=self.error_id)

    def response(self) -> JSONResponse:
        """As our usual `{"error": …}` JSON."""
        return JSONResponse(error_body(self.error_id, self.message), status_code=self.status, headers=self.headers)


@dataclass(frozen=True, slots=True)
class Gate:
    """A client let through, with its rate state for the response headers."""

    client: ApiClient
    rate: service.RateState


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _base_url(ctx: AppContext, request: Request) -> str:
    return runtime_of(ctx).base_url or str(request.base_url).rstrip("/")


def _key(request: Request, fields: Mapping[str, Any] | None = None) -> str | None:
    """The API key from X-Api-Key, a Bearer token, the `api_key` parameter or the body (Open311 style)."""
    header = request.headers.get("x-api-key")
    if header:
        return header.strip()
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    value = request.query_params.get("api_key") or (fields or {}).get("api_key")
    return str(value).strip() if value else None


async def _gate(
    ctx: AppContext, request: Request, *, key: str | None, scopes: tuple[Scope, ...], write: bool,
    action: str | None = None, target: str | None = None, details: dict[str, Any] | None = None,
) -> Gate:
    """Authenticate, check the scope and count the request (with its audit entry for reads) in one transaction."""
    runtime = runtime_of(ctx)
    failure: GateError | None = None
    ip = _ip(request)
    async with ctx.uow() as session:
        client = await service.authenticate(session=session, raw_key=key)
        if client is None:
            await record(session=session, operator=None, actor="anonymous", action="open311.auth.failed", ip=ip,
                         details={"path": request.url.path, "key_prefix": (key or "")[:9]})
            failure = GateError(403, "api_key 无效、已停用或缺失", "invalid-api-key")
        elif not any(service.has_scope(client, s) for s in scopes):
            await record(session=session, operator=None, actor=client.name, action="open311.scope.denied", ip=ip,
                         details={"path": request.url.path})
            failure = GateError(403, "该 api_key 无权使用此接口", "scope-denied")
        else:
            rate = await service.hit_rate(session=session, client=client, now=runtime.clock(), write=write)
            if not rate.allowed:
                await record(session=session, operator=None, actor=client.name, action="open311.rate_limited", ip=ip,
                             details={"path": request.url.path, "window": rate.reason})
                failure = GateError(429, rate.message, "rate-limited", rate.headers())
            elif action:
                await record(session=session, operator=None, actor=client.name, action=action, ip=ip,
                             target_type="request" if target else None, target_id=target, details=details or {})
    if failure is not None:
        log.info("open API refused %s %s: %s", request.method, request.url.path, failure.error_id)
        raise failure
    assert client is not None
    return Gate(client, rate)


async def _audit_rejection(ctx: AppContext, request: Request, client: ApiClient, error: Open311Error) -> None:
    async with ctx.uow() as session:
        await record(session=session, operator=None, actor=client.name, action="open311.request.rejected",
                     ip=_ip(request), details={"status": error.status, "errors": error.descriptions[:10]})
    log.info("open311 request of %s refused (%s): %s", client.name, error.error_id, "; ".join(error.descriptions))


def _split_list(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()][:100]


# --- OpenAPI examples -----------------------------------------------------------------------------------

_POST_EXAMPLE = {
    "api_key": "o311_…", "service_code": "01002", "lat": "30.5912", "long": "114.3021",
    "address_string": "人民路与解放路交叉口东北角", "description": "人行道上的污水井盖破了一个大洞，晚上很危险",
    "attribute[injured]": "no", "attribute[cover_state]": "broken", "phone": "13812345678",
    "first_name": "先生", "last_name": "王", "media_url": "https://app.example.com/photos/abc.jpg",
}
_POST_FIELDS: dict[str, Any] = {
    "api_key": {"type": "string", "description": "接口密钥（也可用 X-Api-Key 请求头）"},
    "jurisdiction_id": {"type": "string"},
    "service_code": {"type": "string", "description": "事项代码（GET services），必填"},
    "lat": {"type": "number", "description": "纬度（WGS-84）；与 long 同时提供，或改用 address_string"},
    "long": {"type": "number"},
    "address_string": {"type": "string", "maxLength": 255},
    "address_id": {"type": "string"},
    "description": {"type": "string", "maxLength": 4000},
    "media_url": {"type": "string", "description": "照片地址（http/https）"},
    "email": {"type": "string"}, "first_name": {"type": "string"}, "last_name": {"type": "string"},
    "phone": {"type": "string", "description": "上报人电话，受理后通过短信/微信告知进展"},
    "device_id": {"type": "string"}, "account_id": {"type": "string"},
    "attribute[code]": {"type": "string", "description": "服务定义中的附加问题，如 attribute[injured]=yes"},
}
POST_OPENAPI: dict[str, Any] = {
    "requestBody": {"required": True, "content": {
        "application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": _POST_FIELDS},
                                              "example": _POST_EXAMPLE},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            **_POST_FIELDS, "media": {"type": "array", "items": {"type": "string", "format": "binary"},
                                      "description": "扩展：直接上传照片（JPEG/PNG/WebP，数量与大小见文档）"}}}},
        "application/json": {"schema": {"type": "object", "properties": {
            **{k: v for k, v in _POST_FIELDS.items() if not k.startswith("attribute")},
            "attribute": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "example": {**{k: v for k, v in _POST_EXAMPLE.items() if not k.startswith("attribute")},
                        "attribute": {"injured": "no", "cover_state": "broken"}}},
    }},
}
_REQUEST_EXAMPLE: dict[str, Any] = {
    "service_request_id": "2611220007", "status": "open", "status_notes": "已派遣至区排水公司",
    "service_name": "污水井盖异常", "service_code": "01002", "description": "人行道上的污水井盖破了一个大洞",
    "agency_responsible": "区排水公司", "service_notice": None, "requested_datetime": "2026-11-22T09:30:12+08:00",
    "updated_datetime": "2026-11-22T10:02:40+08:00", "expected_datetime": "2026-11-22T13:30:12+08:00",
    "address": "人民路与解放路交叉口东北角", "address_id": None, "zipcode": None, "lat": 30.5912, "long": 114.3021,
    "media_url": "https://intake.example.gov.cn/open311/v2/media/2026/11/5f0c….jpg", "media_urls": [],
    "case_number": "C261122000012", "step": "dispatch", "step_label": "派遣",
}


def _errors_doc(*codes: int) -> dict[int | str, dict[str, Any]]:
    texts = {400: "缺少 service_code / 坐标无效 / 描述超过 4000 字 …", 403: "api_key 无效、已停用或缺失",
             404: "service_code 或 service_request_id 不存在", 413: "照片超过大小上限",
             429: "请求过于频繁或今日配额已用完（带 Retry-After）"}
    return {c: {"description": texts[c], "content": {"application/json": {
        "example": [{"code": c, "description": texts[c]}]}}} for c in codes}


# --- discovery and services -------------------------------------------------------------------------------


@router.get("/open311/v2/discovery.{fmt}", tags=[TAG], summary="Open311 service discovery")
async def discovery(fmt: str, request: Request, ctx: Ctx) -> Response:
    """Where the GeoReport v2 endpoint is, which formats it speaks and whom to ask for a key."""
    try:
        fmt = check_format(fmt)
    except Open311Error as err:
        return render_error(err, fmt="json")
    settings = ctx.settings
    data = {
        "changeset": CHANGESET,
        "contact": settings.open311_contact,
        "key_service": f"请联系{settings.open311_contact}申请 api_key",
        "endpoints": [{
            "specification": SPEC_URL, "url": f"{_base_url(ctx, request)}/open311/v2", "changeset": CHANGESET,
            "type": "production" if settings.env == "prod" else "test",
            "formats": ["application/json", "text/xml"],
        }],
    }
    return render(data, fmt=fmt, root="discovery")


def _service(case_type: Any) -> dict[str, Any]:
    return {
        "service_code": case_type.code,
        "service_name": case_type.name,
        "description": f"{case_type.major_name}（{case_type.group}）：{case_type.name}",
        "metadata": bool(catalog.attributes_for(case_type)),
        "type": "realtime",
        "keywords": ",".join(k for k in (case_type.major_name, case_type.group) if k),
        "group": case_type.major_name,
    }


def _jurisdiction(ctx: AppContext, value: str | None) -> None:
    wanted = ctx.settings.open311_jurisdiction_id
    if wanted and value and value != wanted:
        raise Open311Error(400, f"jurisdiction_id {value[:32]} 不由本服务受理（本服务为 {wanted}）",
                           error_id="wrong-jurisdiction")


@router.get("/open311/v2/services.{fmt}", tags=[TAG], summary="GET services: our case types, grouped by 大类",
            responses={200: {"content": {"application/json": {"example": [{
                "service_code": "01002", "service_name": "污水井盖异常", "description": "市政公用设施类（部件问题）：污水井盖异常",
                "metadata": True, "type": "realtime", "keywords": "市政公用设施类,部件问题", "group": "市政公用设施类"}]}}}})
async def list_services(fmt: str, ctx: Ctx, jurisdiction_id: Annotated[str | None, Query(max_length=64)] = None
                        ) -> Response:
    """Every case type as a service; `metadata` says whether it asks extra questions (GET its definition)."""
    try:
        fmt = check_format(fmt)
        _jurisdiction(ctx, jurisdiction_id)
    except Open311Error as err:
        return render_error(err, fmt=fmt)
    types = sorted(ctx.kb.taxonomy.types.values(), key=lambda t: t.code)
    return render([_service(t) for t in types], fmt=fmt, root="services")


@router.get("/open311/v2/services/{code}.{fmt}", tags=[TAG], summary="GET service definition (extra questions)",
            responses={200: {"content": {"application/json": {"example": {"service_code": "01002", "attributes": [
                catalog.INJURED.as_open311(1), catalog.COVER_STATE.as_open311(2)]}}}}, **_errors_doc(404)})
async def service_definition(code: str, fmt: str, ctx: Ctx,
                             jurisdiction_id: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """The attributes a request of this type should answer (e.g. 井盖: 是否有人受伤; 噪声扰民: 发生时段)."""
    try:
        fmt = check_format(fmt)
        _jurisdiction(ctx, jurisdiction_id)
        case_type = ctx.kb.taxonomy.get(code)
        if case_type is None:
            raise Open311Error(404, f"service_code {code[:16]} 不存在", error_id="unknown-service")
    except Open311Error as err:
        return render_error(err, fmt=fmt)
    attributes = [a.as_open311(i) for i, a in enumerate(catalog.attributes_for(case_type), start=1)]
    return render({"service_code": case_type.code, "attributes": attributes}, fmt=fmt, root="service_definition")


# --- POST requests ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Body:
    fields: dict[str, Any]
    attributes: dict[str, Any]
    files: list[UploadFile]

    async def close(self) -> None:
        """Release spooled uploads."""
        for upload in self.files:
            await upload.close()


async def _read_body(request: Request, *, max_files: int) -> _Body:
    """Read a form-encoded, multipart or JSON Open311 body into fields, attribute answers and photos."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    files: list[UploadFile] = []
    if content_type == "application/json":
        try:
            raw = await request.json()
        except ValueError as err:
            raise Open311Error(400, "请求体不是合法的 JSON", error_id="malformed-json") from err
        if not isinstance(raw, dict):
            raise Open311Error(400, "JSON 请求体必须是对象", error_id="malformed-json")
        for key, value in raw.items():
            match = _ATTRIBUTE_RE.match(str(key))
            if key in ("attribute", "attributes") and isinstance(value, dict):
                attributes.update({str(k): v for k, v in value.items()})
            elif match:
                attributes[match.group(1)] = value
            else:
                fields[str(key)] = value
        return _Body(fields, attributes, files)
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Open311Error(400, "Content-Type 须为 application/x-www-form-urlencoded、multipart/form-data 或 "
                                "application/json", error_id="unsupported-content-type")
    try:
        form = await request.form(max_files=max_files + 1, max_fields=200)
    except StarletteHTTPException as err:
        raise Open311Error(400, f"表单无法解析：{err.detail}", error_id="malformed-form") from err
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key in ("media", "media[]", "photo"):
                files.append(value)
            continue
        match = _ATTRIBUTE_RE.match(key)
        if match:
            code = match.group(1)
            if match.group(2) or code in attributes:
                previous = attributes.get(code)
                items = previous if isinstance(previous, list) else ([] if previous is None else [previous])
                attributes[code] = [*items, value]
            else:
                attributes[code] = value
        elif key == "media_url" and key in fields:
            previous = fields[key]
            fields[key] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            fields.setdefault(key, value)
    return _Body(fields, attributes, files)


async def _store_photos(ctx: AppContext, files: list[UploadFile]) -> list[media.StoredPhoto]:
    """Check count, size and real type of the uploads, then store them (nothing is stored if one is bad)."""
    settings = ctx.settings
    if not files:
        return []
    if settings.open311_photo_max_count == 0:
        raise Open311Error(400, "本服务未开放照片上传，请使用 media_url", error_id="uploads-disabled")
    if len(files) > settings.open311_photo_max_count:
        raise Open311Error(400, f"每个请求最多上传 {settings.open311_photo_max_count} 张照片",
                           error_id="too-many-photos")
    limit = settings.open311_photo_max_bytes
    checked: list[tuple[bytes, str]] = []
    for upload in files:
        data = await upload.read(limit + 1)
        name = (upload.filename or "照片")[:40]
        if len(data) > limit:
            raise Open311Error(413, f"照片 {name} 超过 {limit / 1_000_000:g} MB 的上限", error_id="photo-too-large")
        if not data:
            raise Open311Error(400, f"照片 {name} 是空文件", error_id="photo-empty")
        mime = media.sniff_photo(data)
        if mime is None or mime not in settings.open311_photo_types:
            allowed = "、".join(media.EXTENSIONS.get(t, t).upper() for t in settings.open311_photo_types)
            raise Open311Error(400, f"照片 {name} 的格式不支持，仅接受 {allowed}", error_id="photo-type")
        checked.append((data, mime))
    assert settings.media_dir is not None
    return [await media.store_photo(settings.media_dir, data, mime) for data, mime in checked]


@router.post("/open311/v2/requests.{fmt}", tags=[TAG], summary="POST a service request (becomes a draft)",
             openapi_extra=POST_OPENAPI,
             responses={201: {"description": "已受理（同一 Idempotency-Key 重复提交返回 200 和同一编号）",
                              "content": {"application/json": {"example": [{
                                  "service_request_id": "2611220007", "service_notice": "已收到您的上报（编号 2611220007），受理员将尽快审核",
                                  "account_id": None}]}}}, **_errors_doc(400, 403, 413, 429)})
async def post_request(fmt: str, request: Request, ctx: Ctx) -> Response:
    """Submit a report: form-encoded (the standard), JSON, or multipart with photos in `media` (our extension)."""
    body: _Body | None = None
    try:
        fmt = check_format(fmt)
        body = await _read_body(request, max_files=ctx.settings.open311_photo_max_count)
        gate = await _gate(ctx, request, key=_key(request, body.fields), scopes=(Scope.OPEN311,), write=True)
    except (GateError, Open311Error) as err:
        if body is not None:
            await body.close()
        return render_error(err.open311() if isinstance(err, GateError) else err, fmt=fmt)
    client = gate.client
    runtime = runtime_of(ctx)
    settings = ctx.settings
    idempotency = request.headers.get("idempotency-key")
    photos: list[media.StoredPhoto] = []
    try:
        if idempotency is not None and not _IDEMPOTENCY_RE.match(idempotency):
            raise Open311Error(400, "Idempotency-Key 须为 1 到 100 个可见 ASCII 字符", error_id="bad-idempotency-key")
        sub = service.parse_submission(body.fields, body.attributes, kb=ctx.kb,
                                       jurisdiction_id=settings.open311_jurisdiction_id, bounds=runtime.bounds,
                                       region=settings.default_region)
        photos = await _store_photos(ctx, body.files)
    except Open311Error as err:
        await _audit_rejection(ctx, request, client, err)
        err.headers.update(gate.rate.headers())
        return render_error(err, fmt=fmt)
    finally:
        await body.close()
    result = None
    if sub.description:
        # Only the citizen's words: the picked type's answers would just echo the pick back.
        result = await service.classify(ctx.classifier, sub.description, district=None,
                                        budget=settings.open311_classifier_timeout_seconds, kb=ctx.kb)
    suggestion = service.choose_suggestion(kb=ctx.kb, requested=sub.case_type.code, result=result, district=None)
    try:
        async with ctx.uow() as session:
            req, draft, created = await service.submit_open311(
                session=session, kb=ctx.kb, client=client, sub=sub, external_id=idempotency,
                photos=photos, suggestion=suggestion, region=settings.default_region, ip=_ip(request))
            public_id = req.public_id
    except AppError as err:
        assert settings.media_dir is not None
        await media.delete_photos(settings.media_dir, photos)
        error = Open311Error(err.status_code if err.status_code < 500 else 400, err.message, error_id=err.error_id)
        await _audit_rejection(ctx, request, client, error)
        return render_error(error, fmt=fmt)
    except BaseException:
        assert settings.media_dir is not None
        await media.delete_photos(settings.media_dir, photos)
        raise
    if not created and photos:
        assert settings.media_dir is not None
        await media.delete_photos(settings.media_dir, photos)  # a repeat: the first delivery's photos stand
    notice = f"已收到您的上报（编号 {public_id}），受理员将尽快审核，可凭编号查询办理进度"
    data = [{"service_request_id": public_id, "service_notice": notice,
             "account_id": body.fields.get("account_id") or None}]
    log.info("open311 request %s from %s (%s)", public_id, client.name, "new" if created else "repeat")
    return render(data, fmt=fmt, root="service_requests", status=201 if created else 200, headers=gate.rate.headers())


# --- GET requests -------------------------------------------------------------------------------------------

READ_SCOPES = (Scope.OPEN311, Scope.READ_ALL, Scope.TRANSFER_12345, Scope.ALARM)


@router.get("/open311/v2/requests.{fmt}", tags=[TAG], summary="GET service requests",
            responses={200: {"content": {"application/json": {"example": [_REQUEST_EXAMPLE]}}}, **_errors_doc(400, 403, 429)})
async def get_requests(
    fmt: str, request: Request, ctx: Ctx,
    service_request_id: Annotated[str | None, Query(max_length=2000, description="逗号分隔；给出时忽略其他条件")] = None,
    service_code: Annotated[str | None, Query(max_length=500)] = None,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
    status: Annotated[str | None, Query(max_length=20, description="open、closed 或 open,closed")] = None,
    jurisdiction_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Requests of this client (all API requests with the read_all scope): ≤ 1000, newest first, ≤ 90 days."""
    try:
        fmt = check_format(fmt)
        _jurisdiction(ctx, jurisdiction_id)
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False,
                           action="open311.requests.list",
                           details={k: v for k, v in request.query_params.items() if k != "api_key"})
        start, end = service.parse_time(start_date, "start_date"), service.parse_time(end_date, "end_date")
        async with ctx.sessions() as session:
            views = await service.list_requests(
                session=session, client=gate.client, now=runtime_of(ctx).clock(),
                ids=_split_list(service_request_id), codes=_split_list(service_code), start=start, end=end,
                statuses=_split_list(status))
            base = _base_url(ctx, request)
            data = [service.represent(v, kb=ctx.kb, base_url=base) for v in views]
    except GateError as err:
        return render_error(err.open311(), fmt=fmt)
    except Open311Error as err:
        return render_error(err, fmt=fmt)
    return render(data, fmt=fmt, root="service_requests", headers=gate.rate.headers())


async def _one(ctx: AppContext, request: Request, ident: str, action: str) -> tuple[Gate, service.RequestView]:
    gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False, action=action,
                       target=ident[:64])
    async with ctx.sessions() as session:
        view = await service.find_request(session=session, client=gate.client, ident=ident)
    if view is None:
        raise Open311Error(404, f"service_request_id {ident[:32]} 不存在", headers=gate.rate.headers(),
                           error_id="request-not-found")
    return gate, view


@router.get("/open311/v2/requests/{request_id}.{fmt}", tags=[TAG], summary="GET one service request",
            responses={200: {"content": {"application/json": {"example": [_REQUEST_EXAMPLE]}}}, **_errors_doc(403, 404)})
async def get_request(request_id: str, fmt: str, request: Request, ctx: Ctx) -> Response:
    """One request by its id (the draft number) or, once filed, its case number."""
    try:
        fmt = check_format(fmt)
        gate, view = await _one(ctx, request, request_id, "open311.request.read")
    except GateError as err:
        return render_error(err.open311(), fmt=fmt)
    except Open311Error as err:
        return render_error(err, fmt=fmt)
    data = [service.represent(view, kb=ctx.kb, base_url=_base_url(ctx, request))]
    return render(data, fmt=fmt, root="service_requests", headers=gate.rate.headers())


@router.get("/open311/v2/requests/{request_id}/updates.{fmt}", tags=[TAG],
            summary="Extension: every step of one request",
            responses={200: {"content": {"application/json": {"example": [
                {"update_id": "2611220007-r", "service_request_id": "2611220007", "status": "open", "step": "received",
                 "step_label": "已接收", "description": "已收到您的上报，等待受理员审核",
                 "updated_datetime": "2026-11-22T09:30:12+08:00", "media_url": None, "media_urls": []},
                {"update_id": "2611220007-e41", "service_request_id": "2611220007", "status": "open",
                 "step": "dispatch", "step_label": "派遣", "description": "已派遣至区排水公司",
                 "updated_datetime": "2026-11-22T10:02:40+08:00", "media_url": None, "media_urls": []}]}}},
                **_errors_doc(403, 404)})
async def get_request_updates(request_id: str, fmt: str, request: Request, ctx: Ctx) -> Response:
    """The request's history: received, 立案, 派遣, 处置, 反馈 (with photos), 核查, 结案 — not just open/closed."""
    try:
        fmt = check_format(fmt)
        gate, view = await _one(ctx, request, request_id, "open311.updates.read")
    except GateError as err:
        return render_error(err.open311(), fmt=fmt)
    except Open311Error as err:
        return render_error(err, fmt=fmt)
    data = service.updates(view, kb=ctx.kb, base_url=_base_url(ctx, request))
    return render(data, fmt=fmt, root="service_request_updates", headers=gate.rate.headers())


@router.get("/open311/v2/servicerequestupdates.{fmt}", tags=[TAG],
            summary="Extension: updates of all my requests in a time window (for polling clients)")
async def get_all_updates(
    fmt: str, request: Request, ctx: Ctx,
    start_date: Annotated[str | None, Query(max_length=40)] = None,
    end_date: Annotated[str | None, Query(max_length=40)] = None,
) -> Response:
    """Every update between start_date and end_date (default: the last 24 hours; at most 90 days)."""
    try:
        fmt = check_format(fmt)
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False,
                           action="open311.updates.list", details={"start": start_date, "end": end_date})
        now = runtime_of(ctx).clock()
        end = service.parse_time(end_date, "end_date") or now
        start = service.parse_time(start_date, "start_date") or end - dt.timedelta(days=1)
        if end < start or end - start > service.MAX_SPAN:
            raise Open311Error(400, "时间范围无效（最长 90 天）", error_id="date-range")
        async with ctx.sessions() as session:
            data = await service.updates_since(session=session, client=gate.client, kb=ctx.kb,
                                               base_url=_base_url(ctx, request), start=start, end=end)
    except GateError as err:
        return render_error(err.open311(), fmt=fmt)
    except Open311Error as err:
        return render_error(err, fmt=fmt)
    return render(data, fmt=fmt, root="service_request_updates", headers=gate.rate.headers())


@router.get("/open311/v2/media/{key:path}", tags=[TAG], summary="Extension: a photo uploaded with a request")
async def get_media(key: str, ctx: Ctx) -> Response:
    """Serve an uploaded photo (names are random and unguessable)."""
    assert ctx.settings.media_dir is not None
    try:
        path = media.photo_path(ctx.settings.media_dir, key)
    except ValueError:
        return render_error(Open311Error(404, "照片不存在", error_id="media-not-found"), fmt="json")
    if not path.is_file():
        return render_error(Open311Error(404, "照片不存在", error_id="media-not-found"), fmt="json")
    return FileResponse(path, media_type=media.MIME_BY_EXT.get(path.suffix.lstrip("."), "application/octet-stream"),
                        headers={"Cache-Control": "private, max-age=86400"})


# --- webhook subscription (per API key) ---------------------------------------------------------------------


def _refuse_private_literal(ctx: AppContext, url: str) -> None:
    """Refuse literal private addresses up front (names are checked again when delivering)."""
    if ctx.settings.open311_webhook_allow_private:
        return
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        raise Open311Error(400, "webhook_url 不能指向本机或内网地址", error_id="private-webhook")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return
    if ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_unspecified:
        raise Open311Error(400, "webhook_url 不能指向本机或内网地址", error_id="private-webhook")


def _subscription(client: ApiClient) -> dict[str, Any]:
    return {"webhook_url": client.webhook_url, "events": [service.STATUS_EVENT, service.PING_EVENT],
            "signing_secret_hint": client.signing_secret[:10] + "…",
            "signature": "X-Intake-Signature: sha256=HMAC-SHA256(secret, X-Intake-Timestamp + '.' + body)"}


@router.get("/open311/v2/subscription.json", tags=[TAG], summary="Extension: my webhook subscription")
async def get_subscription(request: Request, ctx: Ctx) -> Response:
    """Where status changes of my requests are POSTed."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False,
                           action="open311.subscription.read")
    except GateError as err:
        return render_error(err.open311(), fmt="json")
    return render(_subscription(gate.client), fmt="json", root="subscription", headers=gate.rate.headers())


@router.put("/open311/v2/subscription.json", tags=[TAG], summary="Extension: subscribe to status changes",
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                "schema": Subscription.model_json_schema(), "example": {"webhook_url": "https://app.example.com/hooks/intake"}}}}})
async def put_subscription(request: Request, ctx: Ctx) -> Response:
    """Set the webhook URL; every step of every request of this key is then POSTed there, signed."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False)
        try:
            sub = Subscription.model_validate_json(await request.body())
        except ValidationError as err:
            raise Open311Error(400, "webhook_url 须为 http 或 https 地址", error_id="invalid-webhook") from err
        _refuse_private_literal(ctx, sub.webhook_url)
        async with ctx.uow() as session:
            client = await session.get(ApiClient, gate.client.id)
            assert client is not None
            client.webhook_url = sub.webhook_url
            await record(session=session, operator=None, actor=client.name, action="open311.subscription.update",
                         ip=_ip(request), details={"webhook_url": sub.webhook_url})
    except GateError as err:
        return render_error(err.open311(), fmt="json")
    except Open311Error as err:
        return render_error(err, fmt="json")
    return render(_subscription(client), fmt="json", root="subscription", headers=gate.rate.headers())


@router.delete("/open311/v2/subscription.json", tags=[TAG], summary="Extension: unsubscribe")
async def delete_subscription(request: Request, ctx: Ctx) -> Response:
    """Stop webhooks (pending deliveries are dropped)."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False)
    except GateError as err:
        return render_error(err.open311(), fmt="json")
    async with ctx.uow() as session:
        client = await session.get(ApiClient, gate.client.id)
        assert client is not None
        client.webhook_url = None
        await record(session=session, operator=None, actor=client.name, action="open311.subscription.delete",
                     ip=_ip(request))
    return Response(status_code=204, headers=gate.rate.headers())


@router.post("/open311/v2/subscription/test.json", tags=[TAG], summary="Extension: send a test delivery")
async def test_subscription(request: Request, ctx: Ctx) -> Response:
    """Queue a signed `ping` to the webhook URL (see it in deliveries.json)."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False,
                           action="open311.subscription.test")
        async with ctx.uow() as session:
            client = await session.get(ApiClient, gate.client.id)
            assert client is not None
            try:
                delivery = await service.send_ping(session=session, client=client, now=runtime_of(ctx).clock())
            except AppError as err:
                raise Open311Error(400, err.message, error_id=err.error_id) from err
            delivery_id = delivery.id
    except GateError as err:
        return render_error(err.open311(), fmt="json")
    except Open311Error as err:
        return render_error(err, fmt="json")
    return render({"delivery_id": delivery_id, "status": "pending"}, fmt="json", root="delivery", status=202,
                  headers=gate.rate.headers())


def _delivery(row: Any, public_id: str | None, *, payload: bool = False) -> DeliveryRead:
    return DeliveryRead(id=row.id, event=row.event, url=row.url, status=row.status, attempts=row.attempts,
                        last_status_code=row.last_status_code, last_error=row.last_error,
                        service_request_id=public_id, created_at=row.created_at, delivered_at=row.delivered_at,
                        payload=row.payload if payload else None)


@router.get("/open311/v2/deliveries.json", tags=[TAG], summary="Extension: my webhook delivery log")
async def my_deliveries(request: Request, ctx: Ctx,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> Response:
    """The newest deliveries to this key's webhook and callbacks, with attempts and the last answer."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=READ_SCOPES, write=False,
                           action="open311.deliveries.read")
    except GateError as err:
        return render_error(err.open311(), fmt="json")
    async with ctx.sessions() as session:
        rows = await service.list_deliveries(session=session, client_id=gate.client.id, limit=limit)
    data = [_delivery(d, p).model_dump(mode="json", exclude={"payload"}) for d, p in rows]
    return render(data, fmt="json", root="deliveries", headers=gate.rate.headers())


# --- 12345 work-order transfer -------------------------------------------------------------------------------

TRANSFER_TAG = "12345 转办"


@router.post("/api/transfer/12345/orders", tags=[TRANSFER_TAG], status_code=201, response_model=TransferAccepted,
             responses={200: {"description": "同一工单的重复投递：返回第一次的草稿编号", "model": TransferAccepted},
                        403: {"description": "api_key 无效或无 12345 权限"}, 429: {"description": "超过频率或配额"}})
async def transfer_order(order: TransferOrder, request: Request, response: Response, ctx: Ctx) -> Any:
    """Receive a 12345 work order (idempotent on order_id); the result is POSTed to callback_url at 结案."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=(Scope.TRANSFER_12345,), write=True)
    except GateError as err:
        return err.response()
    requested = service.category_code(ctx.kb, order.category)
    result = await service.classify(ctx.classifier, order.content, district=order.district,
                                    budget=ctx.settings.open311_classifier_timeout_seconds, kb=ctx.kb)
    suggestion = service.choose_suggestion(kb=ctx.kb, requested=requested, result=result, district=order.district)
    async with ctx.uow() as session:
        req, draft, created = await service.receive_order(
            session=session, kb=ctx.kb, client=gate.client, order=order, suggestion=suggestion,
            region=ctx.settings.default_region, ip=_ip(request))
        view = await service.find_request(session=session, client=gate.client, ident=req.public_id)
        assert view is not None
        key, label = service.order_status(view, kb=ctx.kb)
        body = TransferAccepted(order_id=order.order_id, draft_number=req.public_id, duplicate=not created,
                                case_number=view.case.number if view.case else None, status=key, status_label=label)
    response.status_code = 201 if created else 200
    response.headers.update(gate.rate.headers())
    return body


@router.get("/api/transfer/12345/orders/{order_id}", tags=[TRANSFER_TAG], response_model=TransferAccepted)
async def transfer_order_status(order_id: str, request: Request, response: Response, ctx: Ctx) -> Any:
    """Where a transferred order stands (draft, case number, current step)."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=(Scope.TRANSFER_12345,), write=False,
                           action="transfer12345.order.read", target=order_id[:64])
    except GateError as err:
        return err.response()
    async with ctx.sessions() as session:
        req = await session.scalar(select(ServiceRequest).where(
            ServiceRequest.client_id == gate.client.id, ServiceRequest.kind == RequestKind.TRANSFER_12345,
            ServiceRequest.external_id == order_id[:128]))
        view = await service.find_request(session=session, client=gate.client, ident=req.public_id) if req else None
    if view is None:
        raise NotFound("工单不存在", error_id="order-not-found")
    key, label = service.order_status(view, kb=ctx.kb)
    response.headers.update(gate.rate.headers())
    return TransferAccepted(order_id=order_id, draft_number=view.req.public_id, duplicate=False,
                            case_number=view.case.number if view.case else None, status=key, status_label=label)


# --- machine alarms --------------------------------------------------------------------------------------------

ALARM_TAG = "监测告警"


@router.post("/api/alarms", tags=[ALARM_TAG], response_model=AlarmResult,
             responses={201: {"description": "新告警：已生成草稿", "model": AlarmResult},
                        403: {"description": "api_key 无效或无告警权限"}, 429: {"description": "超过频率或配额"}})
async def raise_alarm(alarm: Alarm, request: Request, response: Response, ctx: Ctx) -> Any:
    """One alarm; repeats of the same source + type + place within the window only raise the draft's counter."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=(Scope.ALARM,), write=True)
    except GateError as err:
        return err.response()
    runtime = runtime_of(ctx)
    now = runtime.clock()
    window = dt.timedelta(minutes=ctx.settings.open311_alarm_window_minutes)
    if alarm.time and alarm.time - now > dt.timedelta(days=1):
        return JSONResponse(error_body("alarm-in-future", "告警时间晚于当前时间一天以上，请检查监测系统时钟"),
                            status_code=422)
    suggestion = service.Suggestion()
    if alarm.state == "firing":
        async with ctx.sessions() as session:
            new = await service.alarm_needs_new_draft(session=session, client=gate.client, alarm=alarm, now=now,
                                                      window=window)
        if new:
            known = catalog.alarm_type(alarm.type)
            requested = alarm.case_type_code or (known.case_type_code if known else None)
            result = None
            if requested is None:
                text = f"{alarm.type} {alarm.text or ''} {alarm.location.address or ''}"
                result = await service.classify(ctx.classifier, text, district=alarm.location.district,
                                                budget=ctx.settings.open311_classifier_timeout_seconds, kb=ctx.kb)
            suggestion = service.choose_suggestion(kb=ctx.kb, requested=requested, result=result,
                                                   district=alarm.location.district)
    async with ctx.uow() as session:
        outcome = await service.receive_alarm(session=session, kb=ctx.kb, client=gate.client, alarm=alarm, now=now,
                                              window=window, suggestion=suggestion, ip=_ip(request))
        incident, req = outcome.incident, outcome.request
        case_number = None
        if req is not None:
            view = await service.find_request(session=session, client=gate.client, ident=req.public_id)
            case_number = view.case.number if view and view.case else None
        body = AlarmResult(incident_id=incident.id if incident else None, status=outcome.status,  # type: ignore[arg-type]
                           draft_number=req.public_id if req else None, case_number=case_number,
                           count=incident.count if incident else 0)
    response.status_code = 201 if outcome.status == "created" else 200
    response.headers.update(gate.rate.headers())
    return body


@router.get("/api/alarms/{incident_id}", tags=[ALARM_TAG])
async def alarm_incident(incident_id: int, request: Request, response: Response, ctx: Ctx) -> Any:
    """An incident of this client: counter, first and last time, last value, draft and case."""
    try:
        gate = await _gate(ctx, request, key=_key(request), scopes=(Scope.ALARM,), write=False,
                           action="alarm.read", target=str(incident_id))
    except GateError as err:
        return err.response()
    async with ctx.sessions() as session:
        incident = await session.get(AlarmIncident, incident_id)
        if incident is None or incident.client_id != gate.client.id:
            raise NotFound("告警事件不存在", error_id="incident-not-found")
        req = await session.get(ServiceRequest, incident.request_id)
        view = await service.find_request(session=session, client=gate.client, ident=req.public_id) if req else None
    response.headers.update(gate.rate.headers())
    key, label = service.order_status(view, kb=ctx.kb) if view else ("received", "待受理")
    return {
        "incident_id": incident.id, "source": incident.source, "type": incident.alarm_type, "place": incident.place,
        "count": incident.count, "first_at": incident.first_at, "last_at": incident.last_at,
        "last_value": incident.last_value, "unit": incident.unit, "level": incident.level,
        "resolved_at": incident.resolved_at, "draft_number": req.public_id if req else None,
        "case_number": view.case.number if view and view.case else None, "status": key, "status_label": label,
    }


# --- administration (operators with the admin role) ------------------------------------------------------------

ADMIN_TAG = "开放接口管理"


def _client_read(client: ApiClient) -> ClientRead:
    return ClientRead(id=client.id, name=client.name, contact=client.contact, key_prefix=client.key_prefix,
                      scopes=list(client.scopes), rate_per_minute=client.rate_per_minute,
                      quota_per_day=client.quota_per_day, active=client.active, webhook_url=client.webhook_url,
                      created_at=client.created_at, last_used_at=client.last_used_at)


@router.get("/api/open311/clients", tags=[ADMIN_TAG], response_model=list[ClientRead],
            dependencies=[require_role()])
async def admin_list_clients(ctx: Ctx) -> list[ClientRead]:
    """Every API client (without keys or secrets)."""
    async with ctx.sessions() as session:
        return [_client_read(c) for c in await session.scalars(select(ApiClient).order_by(ApiClient.name))]


@router.post("/api/open311/clients", tags=[ADMIN_TAG], status_code=201, response_model=ClientCreated,
             dependencies=[require_role()])
async def admin_create_client(body: ClientCreate, ctx: Ctx, login: CurrentLogin) -> ClientCreated:
    """Create an API key; the key and signing secret are in this answer only."""
    settings = ctx.settings
    async with ctx.uow() as session:
        client, key = await service.create_client(
            session=session, name=body.name, scopes=body.scopes, contact=body.contact, webhook_url=body.webhook_url,
            rate_per_minute=body.rate_per_minute or settings.open311_default_rate_per_minute,
            quota_per_day=body.quota_per_day or settings.open311_default_quota_per_day, operator=login.operator)
        return ClientCreated(**_client_read(client).model_dump(), api_key=key, signing_secret=client.signing_secret)


@router.post("/api/open311/clients/{client_id}/{action}", tags=[ADMIN_TAG], response_model=ClientRead,
             dependencies=[require_role()])
async def admin_switch_client(client_id: int, action: str, ctx: Ctx, login: CurrentLogin) -> ClientRead:
    """`disable` or `enable` a client."""
    if action not in ("disable", "enable"):
        raise NotFound("操作不存在", error_id="unknown-action")
    async with ctx.uow() as session:
        client = await session.get(ApiClient, client_id)
        if client is None:
            raise NotFound("接口客户端不存在", error_id="client-not-found")
        await service.set_active(session=session, client=client, active=action == "enable", operator=login.operator)
        return _client_read(client)


@router.get("/api/open311/deliveries", tags=[ADMIN_TAG], response_model=list[DeliveryRead],
            dependencies=[require_role()])
async def admin_deliveries(ctx: Ctx, client_id: int | None = None, status: DeliveryStatus | None = None,
                           limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[DeliveryRead]:
    """The delivery log of every client (or one), newest first, with payloads."""
    async with ctx.sessions() as session:
        rows = await service.list_deliveries(session=session, client_id=client_id, status=status, limit=limit)
    return [_delivery(d, p, payload=True) for d, p in rows]


@router.post("/api/open311/deliveries/{delivery_id}/retry", tags=[ADMIN_TAG], response_model=DeliveryRead,
             dependencies=[require_role()])
async def admin_retry_delivery(delivery_id: int, ctx: Ctx, login: CurrentLogin) -> DeliveryRead:
    """Send a failed delivery again (after the receiver was fixed)."""
    async with ctx.uow() as session:
        delivery = await session.get(WebhookDelivery, delivery_id)
        if delivery is None:
            raise NotFound("投递记录不存在", error_id="delivery-not-found")
        await service.retry_delivery(session=session, delivery=delivery, operator=login.operator)
        return _delivery(delivery, None, payload=True)
