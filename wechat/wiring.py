"""WeChat wiring: the bot, its API client and shared token, outbox handlers, the notice channel, /status."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.context import AppContext
from core.models import OutboxJob
from core.settings import Settings
from core.status import ComponentStatus, Health
from wechat import assist, notices, service
from wechat.client import CallbackCodec, HttpWeChatApi
from wechat.schemas import load_templates
from wechat.service import WeChatBot
from wechat.storage import DirectoryMediaStorage, MediaStorage
from wechat.tokens import SharedTokenStore

log = logging.getLogger(__name__)
PRUNE_SECONDS = 300


def build_api(settings: Settings, sessions: async_sessionmaker[AsyncSession],
              http: httpx.AsyncClient) -> HttpWeChatApi | None:
    """Create the API client with the database-shared token, or None without an AppSecret."""
    if not (settings.wechat_app_id and settings.wechat_app_secret):
        return None
    api = HttpWeChatApi(base_url=settings.wechat_api_base_url, app_id=settings.wechat_app_id,
                        app_secret=settings.wechat_app_secret.get_secret_value(), http=http)
    api.tokens = SharedTokenStore(sessions=sessions, app_id=settings.wechat_app_id, fetch=api.stable_token,
                                  margin_seconds=settings.wechat_token_refresh_margin_seconds)
    return api


def wire(ctx: AppContext, *, storage: MediaStorage | None = None) -> WeChatBot | None:
    """Build the bot when the account is configured; register its jobs, notice channel and checks."""
    settings = ctx.settings
    if not (settings.wechat_app_id and settings.wechat_token):
        ctx.status.not_configured("wechat_token", "set INTAKE_WECHAT_APP_ID and INTAKE_WECHAT_TOKEN")
        return None
    templates = load_templates(settings.wechat_templates)
    aes_keys = [k.get_secret_value() for k in (settings.wechat_aes_key, settings.wechat_previous_aes_key) if k]
    codec = CallbackCodec(token=settings.wechat_token.get_secret_value(), app_id=settings.wechat_app_id,
                          aes_keys=aes_keys, accept_plaintext=settings.wechat_accept_plaintext,
                          max_skew_seconds=settings.wechat_max_clock_skew_seconds)
    timeout = httpx.Timeout(settings.wechat_http_timeout_seconds, connect=3.0)
    http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)
    api = build_api(settings, ctx.sessions, http)
    assert settings.media_dir is not None
    bot = WeChatBot(ctx=ctx, codec=codec, api=api, storage=storage or DirectoryMediaStorage(settings.media_dir),
                    suggester=None)
    ctx.wechat = bot

    async def media_job(job: OutboxJob) -> None:
        await service.download_media(bot=bot, media_row_id=int(job.payload["media"]))

    async def classify_job(job: OutboxJob) -> None:
        await service.classify_report(bot=bot, openid=str(job.payload["openid"]),
                                      desc_hash=str(job.payload["desc_hash"]))

    async def reply_job(job: OutboxJob) -> None:
        await service.send_late_reply(bot=bot, openid=str(job.payload["openid"]), text=str(job.payload["text"]))

    async def forget_job(job: OutboxJob) -> None:
        await service.forget_media(bot=bot, openid=str(job.payload["openid"]),
                                   before=dt.datetime.fromisoformat(str(job.payload["before"])))

    async def notice_job(job: OutboxJob) -> None:
        await notices.deliver(bot=bot, notification_id=int(job.payload["notification_id"]), templates=templates)

    ctx.outbox.register(service.MEDIA_KIND, media_job)
    ctx.outbox.register(service.CLASSIFY_KIND, classify_job)
    ctx.outbox.register(service.REPLY_KIND, reply_job)
    ctx.outbox.register(service.FORGET_KIND, forget_job)
    ctx.outbox.register(notices.OUTBOX_KIND, notice_job)
    if api is not None:
        ctx.notices.subscribe(notices.WeChatNoticeChannel(), priority=10)

    async def token_check() -> ComponentStatus:
        if api is None or api.tokens is None:
            return ComponentStatus(Health.NOT_CONFIGURED, "callback only: set INTAKE_WECHAT_APP_SECRET for the API")
        await api.tokens.get()
        expires = api.tokens.expires_at if isinstance(api.tokens, SharedTokenStore) else None
        mode = "safe mode" if codec.safe_mode else "plaintext mode"
        left = f", token valid {int((expires - dt.datetime.now(dt.UTC)).total_seconds() // 60)} min" if expires else ""
        return ComponentStatus(Health.OK, f"{mode}{left}")

    async def storage_check() -> ComponentStatus:
        ok = await bot.storage.check()
        return ComponentStatus(Health.OK if ok else Health.FAIL, bot.storage.name)

    ctx.status.register("wechat_token", token_check)
    ctx.status.register("wechat_media", storage_check)

    async def warm_up() -> None:
        # Load jieba, the article index and the optional classifier now, in threads, not in the first
        # citizen's 5 seconds; this runs after every domain is wired, so ctx.classifier is set by then.
        try:
            await asyncio.to_thread(assist.warm_up)
            loaded = await asyncio.to_thread(assist.load_suggester, ctx.kb, ctx.classifier)
            if bot.suggester is None:  # unless one was set meanwhile (tests inject their own)
                bot.suggester = loaded
            log.info("wechat bot warmed up (case-type suggestions %s)", "on" if bot.suggester else "off")
        finally:
            bot.warmed = True

    warm = asyncio.create_task(warm_up(), name="wechat-warm-up")

    async def prune_loop() -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            try:
                await service.prune(bot=bot)
            except Exception as err:  # noqa: BLE001 - housekeeping must survive a database outage
                log.warning("wechat prune failed: %s", type(err).__name__)

    pruner = asyncio.create_task(prune_loop(), name="wechat-prune")

    async def close() -> None:
        pruner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pruner
        with contextlib.suppress(Exception):
            await warm
        await bot.close()
        await http.aclose()

    ctx.closers.append(close)
    log.info("wechat bot ready (%s, api %s)", "safe mode" if codec.safe_mode else "plaintext mode",
             "on" if api else "off")
    return bot
