"""Gateway callbacks (delivery reports and replies) behind a secret path segment; they answer fast and queue."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import TypeAdapter, ValidationError

from core.deps import Ctx
from core.errors import AppError, NotFound
from sms.providers.aliyun import inbound_from_uplink, receipt_from_report
from sms.providers.kannel import inbound_from_post, receipt_from_dlr
from sms.providers.tencent import inbound_from_reply, receipt_from_status
from sms.schemas import AliyunReport, AliyunUplink, TencentReply, TencentStatus
from sms.service import SmsService

log = logging.getLogger(__name__)
router = APIRouter(prefix="/sms", tags=["sms callbacks"], include_in_schema=True)

MAX_CALLBACK_BYTES = 256_000
_ALIYUN_REPORTS = TypeAdapter(list[AliyunReport])
_ALIYUN_UPLINKS = TypeAdapter(list[AliyunUplink])
_TENCENT_STATUSES = TypeAdapter(list[TencentStatus])


class BadCallback(AppError):
    """A gateway callback whose body does not match the gateway's documented format."""

    error_id = "sms-bad-callback"
    message = "回调内容格式不正确"


def _service(ctx: Ctx, token: str) -> SmsService:
    """Return the SMS service when the token matches; a wrong or unset token looks like no page at all."""
    expected = ctx.settings.sms_callback_token
    service: SmsService | None = ctx.sms
    if expected is None or service is None or not hmac.compare_digest(
            token.encode(), expected.get_secret_value().encode()):
        log.warning("sms callback with a wrong token refused")
        raise NotFound()
    return service


async def _body(request: Request) -> bytes:
    body = await request.body()
    if len(body) > MAX_CALLBACK_BYTES:
        raise BadCallback("回调内容过大")
    return body


def _parse(adapter: TypeAdapter[Any], body: bytes, what: str) -> Any:
    try:
        data = json.loads(body)
        if isinstance(data, dict):  # a single item instead of a batch
            data = [data]
        return adapter.validate_python(data)
    except (ValueError, ValidationError) as err:
        log.warning("sms %s callback with a malformed body refused", what)
        raise BadCallback(details={"callback": what}) from err


@router.get("/kannel/dlr/{token}", response_class=PlainTextResponse, summary="Kannel delivery report (dlr-url)")
async def kannel_dlr(
    ctx: Ctx, token: str,
    ref: Annotated[str, Query(min_length=1, max_length=128)],
    type: Annotated[int, Query(ge=0, le=255)],  # noqa: A002 - Kannel's parameter name
    ts: Annotated[int | None, Query(ge=0)] = None,
    fid: Annotated[str | None, Query(max_length=128)] = None,
) -> str:
    """Record a delivery report; our key (`ref`) came with the dlr-url we gave Kannel."""
    service = _service(ctx, token)
    receipt = receipt_from_dlr(ref=ref, dlr_type=type, timestamp=ts, foreign_id=fid or None)
    if receipt is not None:
        await service.receipt(receipt)
        if receipt.delivered is not False and getattr(service.sender, "smsc_offline", False):
            service.sender.smsc_offline = False  # type: ignore[attr-defined]  # the SMSC took a message: link is up
    return "ok"


@router.post("/kannel/incoming/{token}", response_class=PlainTextResponse,
             summary="A citizen's SMS from Kannel (post-url with send-sender)")
async def kannel_incoming(
    request: Request, ctx: Ctx, token: str,
    id: Annotated[str, Query(min_length=1, max_length=64)],  # noqa: A002 - Kannel's %I
    ts: Annotated[int | None, Query(ge=0)] = None,
    x_kannel_from: Annotated[str | None, Header(max_length=32)] = None,
) -> PlainTextResponse:
    """Queue the reply durably; the empty answer tells Kannel not to send anything back."""
    service = _service(ctx, token)
    if not x_kannel_from:
        raise BadCallback("缺少发送号码（请在 sms-service 中设置 send-sender = true）")
    body = await _body(request)
    charset = None
    content_type = request.headers.get("content-type", "")
    if "charset=" in content_type:
        charset = content_type.split("charset=", 1)[1].split(";")[0].strip()
    await service.inbound(inbound_from_post(message_id=id, sender=x_kannel_from, body=body, charset=charset,
                                            timestamp=ts))
    return PlainTextResponse("", status_code=200)


ALIYUN_OK = {"code": 0, "msg": "成功"}
TENCENT_OK = {"result": 0, "errmsg": "OK"}


@router.post("/aliyun/report/{token}", summary="Aliyun SmsReport push (delivery reports)")
async def aliyun_report(request: Request, ctx: Ctx, token: str) -> JSONResponse:
    """Record a batch of delivery reports (Aliyun wants an answer within about 700 ms)."""
    service = _service(ctx, token)
    items: list[AliyunReport] = _parse(_ALIYUN_REPORTS, await _body(request), "aliyun report")
    for item in items:
        await service.receipt(receipt_from_report(item))
    return JSONResponse(ALIYUN_OK)


@router.post("/aliyun/up/{token}", summary="Aliyun SmsUp push (citizens' replies)")
async def aliyun_up(request: Request, ctx: Ctx, token: str) -> JSONResponse:
    """Queue a batch of replies."""
    service = _service(ctx, token)
    items: list[AliyunUplink] = _parse(_ALIYUN_UPLINKS, await _body(request), "aliyun uplink")
    for item in items:
        await service.inbound(inbound_from_uplink(item))
    return JSONResponse(ALIYUN_OK)


@router.post("/tencent/status/{token}", summary="Tencent Cloud delivery-status callback")
async def tencent_status(request: Request, ctx: Ctx, token: str) -> JSONResponse:
    """Record a batch of delivery statuses."""
    service = _service(ctx, token)
    items: list[TencentStatus] = _parse(_TENCENT_STATUSES, await _body(request), "tencent status")
    for item in items:
        await service.receipt(receipt_from_status(item))
    return JSONResponse(TENCENT_OK)


@router.post("/tencent/reply/{token}", summary="Tencent Cloud reply callback")
async def tencent_reply(request: Request, ctx: Ctx, token: str) -> JSONResponse:
    """Queue a citizen's reply."""
    service = _service(ctx, token)
    body = await _body(request)
    try:
        item = TencentReply.model_validate_json(body)
    except ValidationError as err:
        log.warning("sms tencent reply callback with a malformed body refused")
        raise BadCallback(details={"callback": "tencent reply"}) from err
    await service.inbound(inbound_from_reply(item))
    return JSONResponse(TENCENT_OK)
