"""`intake apikey …`: API keys of the open intake API (Open311, 12345 transfer, alarms)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.settings import Settings, get_settings

T = TypeVar("T")
SCOPES = ("open311", "read_all", "12345", "alarm")


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as err:
        raise click.ClickException(f"invalid settings: {err}") from err


def _run(work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run one committed unit of work against the configured database."""
    from core.db import make_engine, make_sessionmaker
    from core.errors import AppError

    settings = _settings()

    async def _go() -> T:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await work(session)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(_go())
    except AppError as err:
        raise click.ClickException(err.message) from err


def register(main: click.Group) -> None:
    """Attach the `apikey` group to the `intake` command."""

    @main.group("apikey")
    def apikey() -> None:
        """API keys for partner systems (third-party apps, the 12345 platform, monitoring systems)."""

    @apikey.command("create")
    @click.option("--name", required=True, help="Who the key is for (shown in the audit log).")
    @click.option("--scope", "scopes", multiple=True, type=click.Choice(SCOPES), default=("open311",),
                  show_default=True, help="Repeat for several: open311, read_all, 12345, alarm.")
    @click.option("--contact", default=None, help="Who runs the partner system (phone, e-mail).")
    @click.option("--rate-per-minute", type=click.IntRange(1), default=None,
                  help="Requests per minute (default INTAKE_OPEN311_DEFAULT_RATE_PER_MINUTE).")
    @click.option("--quota-per-day", type=click.IntRange(1), default=None,
                  help="Submissions per day (default INTAKE_OPEN311_DEFAULT_QUOTA_PER_DAY).")
    @click.option("--webhook-url", default=None, help="Where status changes of its requests are POSTed.")
    def create(name: str, scopes: tuple[str, ...], contact: str | None, rate_per_minute: int | None,
               quota_per_day: int | None, webhook_url: str | None) -> None:
        """Create a key; the key and the webhook signing secret are printed this once."""
        from core.open311 import service
        from core.open311.client import UnsafeUrl, check_url_syntax
        from core.open311.models import Scope

        settings = _settings()
        if webhook_url:
            try:
                check_url_syntax(webhook_url)
            except UnsafeUrl as err:
                raise click.BadParameter(str(err), param_hint="--webhook-url") from err

        async def work(session: AsyncSession) -> tuple[str, str]:
            client, key = await service.create_client(
                session=session, name=name, scopes=[Scope(s) for s in scopes], contact=contact,
                webhook_url=webhook_url, actor="cli",
                rate_per_minute=rate_per_minute or settings.open311_default_rate_per_minute,
                quota_per_day=quota_per_day or settings.open311_default_quota_per_day)
            return key, client.signing_secret

        key, secret = _run(work)
        click.echo(f"api key for {name} ({', '.join(sorted(set(scopes)))}):")
        click.echo(f"  api_key:        {key}")
        click.echo(f"  signing secret: {secret}")
        click.echo("store both now: they are not shown again (rotate with `intake apikey rotate`).")

    @apikey.command("list")
    def list_keys() -> None:
        """List keys (prefix only), scopes, limits and webhooks."""
        from core.open311.models import ApiClient

        async def work(session: AsyncSession) -> list[ApiClient]:
            return list(await session.scalars(select(ApiClient).order_by(ApiClient.name)))

        for c in _run(work):
            state = "active" if c.active else "disabled"
            click.echo(f"{c.name:24} {c.key_prefix}…  {state:8} {','.join(c.scopes):24} "
                       f"{c.rate_per_minute}/min {c.quota_per_day}/day  {c.webhook_url or '-'}")

    def _switch(name: str, active: bool) -> None:
        from core.open311 import service

        async def work(session: AsyncSession) -> None:
            client = await service.get_client(session=session, name=name)
            await service.set_active(session=session, client=client, active=active, actor="cli")

        _run(work)
        click.echo(f"{name} {'enabled' if active else 'disabled'}")

    @apikey.command("disable")
    @click.option("--name", required=True)
    def disable(name: str) -> None:
        """Refuse the key from now on (nothing more is delivered to it)."""
        _switch(name, False)

    @apikey.command("enable")
    @click.option("--name", required=True)
    def enable(name: str) -> None:
        """Accept a disabled key again."""
        _switch(name, True)

    @apikey.command("rotate")
    @click.option("--name", required=True)
    @click.option("--secret", "what", flag_value="secret", help="Rotate the webhook signing secret instead.")
    @click.option("--key", "what", flag_value="key", default=True, help="Rotate the API key (default).")
    def rotate(name: str, what: str) -> None:
        """Issue a new API key (the old one stops at once) or a new signing secret."""
        from core.open311 import service

        async def work(session: AsyncSession) -> str:
            client = await service.get_client(session=session, name=name)
            if what == "secret":
                return await service.rotate_secret(session=session, client=client, actor="cli")
            return await service.rotate_key(session=session, client=client, actor="cli")

        value = _run(work)
        click.echo(f"new {'signing secret' if what == 'secret' else 'api_key'} for {name}: {value}")
