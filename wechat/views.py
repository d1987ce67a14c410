"""HTTP endpoints: the WeChat callback (/wechat) and the stored photos for the seat console."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse
from starlette.requests import ClientDisconnect

from core.deps import Ctx, CurrentLogin
from core.errors import AppError, NotFound, PayloadTooLarge
from wechat.client import WeChatNotConfigured
from wechat.models import MediaStatus, WeChatMedia
from wechat.service import WeChatBot

log = logging.getLogger(__name__)
router = APIRouter(tags=["wechat"])


def _bot(ctx: Ctx) -> WeChatBot:
    bot = ctx.wechat
    if not isinstance(bot, WeChatBot):
        raise WeChatNotConfigured()
    return bot


async def _read_body(request: Request, limit: int) -> bytes:
    """Read at most `limit` bytes: refuse by declared length first, then while streaming."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(details={"limit": limit})
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(details={"limit": limit})
        chunks.append(chunk)
    return b"".join(chunks)


def _log_rejection(request: Request, err: AppError) -> None:
    # Never the query string: it carries a signature that could be replayed.
    peer = request.client.host if request.client else "-"
    log.warning("wechat callback from %s rejected: %s", peer, err.error_id)


@router.get("/wechat", response_class=PlainTextResponse, summary="WeChat URL verification")
async def verify(request: Request, ctx: Ctx) -> PlainTextResponse:
    """Echo `echostr` when the signature over token, timestamp and nonce is right."""
    bot = _bot(ctx)
    try:
        return PlainTextResponse(bot.verify(request.query_params))
    except AppError as err:
        _log_rejection(request, err)
        raise


@router.post("/wechat", summary="WeChat message callback")
async def callback(request: Request, ctx: Ctx) -> Response:
    """Answer a message or event (plaintext, compatible or safe mode) within WeChat's 5 seconds."""
    started = asyncio.get_running_loop().time()
    bot = _bot(ctx)
    try:
        body = await _read_body(request, bot.settings.wechat_max_body_bytes)
        result = await bot.handle(params=request.query_params, body=body, started=started)
    except ClientDisconnect:
        # WeChat (or anyone) hung up mid-body: nothing was accepted, so nothing is lost; WeChat retries.
        log.info("wechat callback: client disconnected before the body was complete")
        return Response(status_code=400)
    except AppError as err:
        _log_rejection(request, err)
        raise
    return Response(result.body, media_type=result.media_type)


@router.get("/wechat/media/{media_id}", summary="A photo or voice note a citizen sent")
async def media(media_id: int, ctx: Ctx, login: CurrentLogin) -> Response:
    """Serve a stored media file to a logged-in operator."""
    bot = _bot(ctx)
    async with ctx.sessions() as session:
        row = await session.get(WeChatMedia, media_id)
    if row is None:
        raise NotFound("文件不存在", error_id="wechat-media-not-found")
    if row.status != MediaStatus.STORED or not row.storage_key:
        raise NotFound("文件尚未下载完成" if row.status == MediaStatus.PENDING else "文件下载失败",
                       error_id=f"wechat-media-{row.status.value}")
    try:
        data = await bot.storage.read(row.storage_key)
    except FileNotFoundError as err:
        raise NotFound("文件不存在", error_id="wechat-media-missing") from err
    return Response(data, media_type=row.mime or "application/octet-stream",
                    headers={"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"})
