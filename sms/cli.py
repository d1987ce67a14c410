"""`intake sms …`: send a (test) SMS through the configured gateway, opt-outs, status, the Kannel config."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import click

from core.settings import Settings, get_settings


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as err:
        raise click.ClickException(f"invalid settings: {err}") from err


def _params(values: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{value!r} is not NAME=VALUE", param_hint="--param")
        params[name.strip()] = text
    return params


async def _with_service(settings: Settings, action: Any) -> Any:
    """Run `action(service)` with the SMS service wired to the configured gateway, then close everything."""
    import httpx

    from core.app import build_context
    from sms.wiring import wire

    async with httpx.AsyncClient() as http:
        ctx = build_context(settings, http=http)
        try:
            service = wire(ctx)
            wait_bound = getattr(service.sender, "wait_bound", None)
            if wait_bound is not None:
                await asyncio.to_thread(wait_bound, settings.sms_timeout_seconds)
            return await action(service)
        finally:
            for closer in reversed(ctx.closers):
                await closer()
            await ctx.bus.stop()
            await ctx.engine.dispose()


def register(main: click.Group) -> None:
    """Attach the `sms` command group."""

    @main.group()
    def sms() -> None:
        """SMS gateway: test sends, opt-outs (退订), status, Kannel configuration."""

    @sms.command("send")
    @click.option("--to", "to", required=True, help="Mobile number (13812345678 or +8613812345678).")
    @click.option("--template", default=None, help="Notice template (accepted, dispatched, closed, rated, …).")
    @click.option("--param", "params", multiple=True, help="Template variable NAME=VALUE (repeatable).")
    @click.option("--text", default=None, help="Free text instead of a template (the signature is added).")
    @click.option("--urgent/--normal", default=False, show_default=True,
                  help="Urgent SMS ignore the quiet hours.")
    @click.option("--key", default=None, help="Idempotency key: the same key never sends twice (default: new).")
    @click.option("--queue-only", is_flag=True, help="Only queue it; the running service's outbox sends it.")
    def send(to: str, template: str | None, params: tuple[str, ...], text: str | None, urgent: bool,
             key: str | None, queue_only: bool) -> None:
        """Queue an SMS durably and send it now through the configured gateway (for operators and checks)."""
        from core.errors import AppError
        from core.outbox import PermanentFailure, TemporaryFailure
        from core.phone import mask_phone
        from sms.models import SmsStatus
        from sms.service import SmsService
        from sms.templates import UnknownTemplate

        if (template is None) == (text is None):
            raise click.UsageError("give exactly one of --template and --text")
        settings = _settings()
        send_key = key or f"cli:{uuid.uuid4().hex}"

        async def action(service: SmsService) -> Any:
            async with service.ctx.uow() as session:
                queued = await service.queue_text(session=session, to=to, key=send_key, text=text,
                                                  template=template, params=_params(params), urgent=urgent)
                send_id = queued.id
            click.echo(f"queued {send_key} to {mask_phone(queued.phone)} ({queued.parts} part(s)): {queued.body}")
            if queue_only:
                return queued
            try:
                return await service.process(send_id)
            except (PermanentFailure, TemporaryFailure):
                async with service.ctx.sessions() as session:
                    from sms.models import SmsSend

                    return await session.get(SmsSend, send_id)

        try:
            result = asyncio.run(_with_service(settings, action))
        except UnknownTemplate as err:
            raise click.ClickException(f"no SMS template {err}") from err
        except AppError as err:
            raise click.ClickException(err.message) from err
        if queue_only:
            return
        line = f"{result.status.value} via {result.provider or settings.sms_provider}"
        if result.provider_message_id:
            line += f" (id {result.provider_message_id})"
        if result.status == SmsStatus.PENDING and result.not_before:
            line += f", deferred to {result.not_before.isoformat()} ({result.defer_reason})"
        if result.error:
            line += f": {result.error}"
        click.echo(line)
        if result.status in (SmsStatus.FAILED, SmsStatus.SKIPPED):
            raise SystemExit(1)
        if result.status in (SmsStatus.PENDING, SmsStatus.SUBMITTING) and result.error:
            raise SystemExit(2)  # will be retried by the outbox of the running service

    def _opt(to: str, *, opt_out: bool) -> None:
        from core.errors import AppError
        from core.phone import mask_phone, normalise_phone
        from sms.service import SmsService

        settings = _settings()

        async def action(service: SmsService) -> None:
            phone = normalise_phone(to, region=settings.default_region)
            async with service.ctx.uow() as session:
                if opt_out:
                    await service.opt_out(session=session, phone=phone, via="operator")
                else:
                    await service.opt_in(session=session, phone=phone, via="operator")
            click.echo(f"{mask_phone(phone)}: {'opted out (退订)' if opt_out else 'receives SMS again'}")

        try:
            asyncio.run(_with_service(settings, action))
        except AppError as err:
            raise click.ClickException(err.message) from err

    @sms.command("opt-out")
    @click.option("--to", "to", required=True, help="Mobile number.")
    def opt_out(to: str) -> None:
        """Stop every SMS to a number (as if the citizen had replied 退订)."""
        _opt(to, opt_out=True)

    @sms.command("opt-in")
    @click.option("--to", "to", required=True, help="Mobile number.")
    def opt_in(to: str) -> None:
        """Allow SMS to a number again (the citizen asked for it on the hotline)."""
        _opt(to, opt_out=False)

    @sms.command("status")
    def status() -> None:
        """SMS of the last 24 hours per status, opted-out numbers, and the gateway check."""
        import datetime as dt

        from sqlalchemy import func, select

        from core.db import utcnow
        from sms.models import SmsRecipient, SmsSend
        from sms.service import SmsService

        settings = _settings()

        async def action(service: SmsService) -> None:
            since = utcnow() - dt.timedelta(days=1)
            async with service.ctx.sessions() as session:
                rows = await session.execute(select(SmsSend.status, func.count()).where(
                    SmsSend.created_at >= since).group_by(SmsSend.status))
                counts = Counter({status.value: int(n) for status, n in rows.all()})
                opted_out = await session.scalar(select(func.count()).select_from(SmsRecipient).where(
                    SmsRecipient.opted_out_at.is_not(None)))
            ok = await service.sender.check()
            click.echo(f"gateway {service.sender.name}: {'ok' if ok else 'FAIL'}")
            for name in ("pending", "submitting", "submitted", "delivered", "failed", "skipped"):
                click.echo(f"{name:11} {counts.get(name, 0)}")
            click.echo(f"opted out  {opted_out or 0} number(s)")

        asyncio.run(_with_service(settings, action))

    @sms.command("kannel-config")
    @click.option("--smsc-host", default=None, help="Upstream SMSC (SMPP) host; omit for a fakesmsc test SMSC.")
    @click.option("--smsc-port", default=2775, show_default=True, type=int)
    @click.option("--smsc-username", default=None, help="SMPP system_id at the upstream SMSC.")
    @click.option("--smsc-password", default=None, help="SMPP password at the upstream SMSC.")
    @click.option("--workdir", default="/var/lib/kannel", show_default=True, type=click.Path(path_type=Path))
    @click.option("--output", "-o", default=None, type=click.Path(path_type=Path),
                  help="Write here (mode 600) instead of stdout.")
    def kannel_config(smsc_host: str | None, smsc_port: int, smsc_username: str | None, smsc_password: str | None,
                      workdir: Path, output: Path | None) -> None:
        """Print a kannel.conf wired to this service (sendsms user, post-url for replies, store, log levels)."""
        import secrets

        from sms.kannel_box import render_config, smpp_upstream
        from sms.wiring import callback_url

        settings = _settings()
        incoming = callback_url(settings, "kannel/incoming")
        if incoming is None or settings.sms_kannel_password is None:
            raise click.ClickException("set INTAKE_SMS_PUBLIC_BASE_URL, INTAKE_SMS_CALLBACK_TOKEN and "
                                       "INTAKE_SMS_KANNEL_PASSWORD first")
        smsc: dict[str, str | int]
        if smsc_host:
            if not (smsc_username and smsc_password):
                raise click.UsageError("--smsc-username and --smsc-password are needed with --smsc-host")
            smsc = smpp_upstream(host=smsc_host, port=smsc_port, username=smsc_username, password=smsc_password,
                                 system_type=settings.sms_smpp_system_type)
        else:
            smsc = {"smsc": "fake", "smsc-id": "fake", "port": 10000, "connect-allow-ip": "127.0.0.1"}
        text = render_config(incoming_url=incoming, username=settings.sms_kannel_username,
                             password=settings.sms_kannel_password.get_secret_value(),
                             admin_password=secrets.token_urlsafe(16), smsc=smsc, workdir=workdir,
                             default_sender=settings.sms_kannel_sender)
        if output is None:
            click.echo(text)
            return
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        click.echo(f"written to {output}")

    @sms.command("kannel-dev")
    @click.option("--workdir", default=None, type=click.Path(path_type=Path), help="Default: <var>/kannel.")
    def kannel_dev(workdir: Path | None) -> None:
        """Run a local Kannel with fakesmsc as the SMSC (development); prints the settings to use. Ctrl-C stops."""
        from sms.kannel_box import KannelBox, kannel_installed
        from sms.wiring import callback_url

        settings = _settings()
        if not kannel_installed():
            raise click.ClickException("install Debian's kannel and kannel-extras (scripts/system-deps.sh)")
        incoming = callback_url(settings, "kannel/incoming")
        if incoming is None:
            raise click.ClickException("set INTAKE_SMS_PUBLIC_BASE_URL and INTAKE_SMS_CALLBACK_TOKEN first")
        box = KannelBox(workdir=workdir or settings.var_dir / "kannel", incoming_url=incoming)
        box.start()
        click.echo(f"INTAKE_SMS_PROVIDER=kannel INTAKE_SMS_KANNEL_URL={box.sendsms_url} "
                   f"INTAKE_SMS_KANNEL_PASSWORD={box.password}")
        click.echo(f"what the phones receive: {box.fakesmsc_log}")
        try:
            while all(p.poll() is None for p in box.processes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            box.stop()
