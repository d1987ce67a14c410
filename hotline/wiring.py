"""Hotline wiring: connect to Asterisk's AMI, follow calls, register the /status check."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from core.context import AppContext
from core.settings import Settings
from hotline.client import PanoramiskAmi
from hotline.pbx import DevPbx
from hotline.runtime import HotlineService

log = logging.getLogger(__name__)


def ami_host(settings: Settings) -> str | None:
    """The configured AMI host; in development, the local dev PBX while `intake asterisk up` runs."""
    if settings.ami_host:
        return settings.ami_host
    if settings.env == "dev" and DevPbx.from_settings(settings).pid() is not None:
        return "127.0.0.1"
    return None


def recordings_dir(settings: Settings) -> Path | None:
    """Where this process reads the PBX's recordings (a shared mount in production)."""
    if settings.hotline_recordings_dir is not None:
        return settings.hotline_recordings_dir
    return DevPbx.from_settings(settings).monitor_dir


def wire(ctx: AppContext) -> None:
    """Build the AMI client and the hotline service; it starts with the app and stops with it."""
    settings = ctx.settings
    host = ami_host(settings)
    if not host:
        ctx.status.not_configured("ami", "set INTAKE_AMI_HOST to follow calls (or run `intake asterisk up` in dev)")
        return
    ami = PanoramiskAmi(host=host, port=settings.ami_port, username=settings.ami_username,
                        secret=settings.ami_secret.get_secret_value(), timeout=settings.ami_timeout_seconds,
                        ping_interval=settings.ami_ping_seconds)
    hotline = HotlineService(ctx, ami, recordings_dir=recordings_dir(settings))
    ctx.hotline = hotline
    ctx.status.register("ami", hotline.check)
    # wire() runs inside the lifespan's event loop: start now, stop with the app.
    starting = asyncio.create_task(hotline.start(), name="hotline-start")

    async def close() -> None:
        await starting
        await hotline.stop()

    ctx.closers.append(close)
