"""The `intake` command: serve, database migrations, operator accounts, outbox maintenance."""

from __future__ import annotations

import asyncio
import getpass
import sys

import click

from core.settings import Settings, get_settings


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as err:
        raise click.ClickException(f"invalid settings: {err}") from err


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """城市管理热线受理服务 — intake service of the urban-management command centre."""


@main.command()
@click.option("--host", default=None, help="Interface to listen on (default INTAKE_HOST or 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port to listen on (default INTAKE_PORT or 8000).")
@click.option("--workers", default=1, show_default=True, help="Worker processes (use PostgreSQL + Redis for >1).")
def serve(host: str | None, port: int | None, workers: int) -> None:
    """Serve the API and the seat console."""
    import uvicorn

    settings = _settings()
    uvicorn.run(
        "core.app:app_from_env",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        # uvicorn's access log prints query strings (WeChat puts the openid there); the app logs paths itself.
        access_log=False,
        # Live-event streams never end on their own; do not let them hold a restart hostage.
        timeout_graceful_shutdown=5,
    )


@main.group()
def db() -> None:
    """Database schema migrations."""


@db.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: every head)."""
    from core.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    click.echo(f"database at {revision} ({settings.database_url.split('://')[0]})")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION."""
    from core.migrate import downgrade

    downgrade(_settings().database_url, revision)


@db.command("revision")
@click.option("-m", "--message", required=True)
def db_revision(message: str) -> None:
    """Autogenerate a migration from the models (for developers)."""
    from core.migrate import revision

    revision(_settings().database_url, message)


@main.group()
def admin() -> None:
    """Operator accounts."""


@admin.command("create")
@click.option("--username", required=True)
@click.option("--display-name", default=None, help="Name shown in the console.")
@click.option("--role", type=click.Choice(["agent", "supervisor", "admin"]), default="admin", show_default=True)
@click.option("--extension", default=None, help="Seat extension (e.g. 8001).")
@click.option("--password", default=None, help="Read from INTAKE_ADMIN_PASSWORD or a prompt when omitted.")
def admin_create(username: str, display_name: str | None, role: str, extension: str | None,
                 password: str | None) -> None:
    """Create an operator (受理员 agent, 值班长 supervisor, admin)."""
    import os

    from core.db import make_engine, make_sessionmaker
    from core.errors import AppError
    from core.models import Role
    from core.security import create_operator

    password = password or os.environ.get("INTAKE_ADMIN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise click.ClickException("give --password or INTAKE_ADMIN_PASSWORD")
        password = getpass.getpass("密码: ")
    settings = _settings()

    async def _run() -> None:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                await create_operator(session=session, username=username, password=password,
                                      display_name=display_name, role=Role(role), extension=extension)
        finally:
            await engine.dispose()

    try:
        asyncio.run(_run())
    except AppError as err:
        raise click.ClickException(err.message) from err
    click.echo(f"operator {username} created ({role})")


@admin.command("bootstrap")
def admin_bootstrap() -> None:
    """Create the first admin when there is no operator yet; the password goes to var/ (mode 600)."""
    import os
    import secrets

    from sqlalchemy import func, select

    from core.db import make_engine, make_sessionmaker
    from core.models import Operator, Role
    from core.security import create_operator

    settings = _settings()
    password_file = settings.var_dir / "initial-admin-password"

    async def _run() -> bool:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                if await session.scalar(select(func.count()).select_from(Operator)):
                    return False
                password = secrets.token_urlsafe(12)
                await create_operator(session=session, username="admin", password=password,
                                      display_name="系统管理员", role=Role.ADMIN)
                settings.var_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(password + "\n")
                return True
        finally:
            await engine.dispose()

    if asyncio.run(_run()):
        click.echo(f"created operator 'admin'; its password is in {password_file}")


@main.group()
def outbox() -> None:
    """Outbox maintenance."""


@outbox.command("status")
def outbox_status() -> None:
    """Show how many jobs are pending, done and dead."""
    from sqlalchemy import func, select

    from core.db import make_engine, make_sessionmaker
    from core.models import OutboxJob

    settings = _settings()

    async def _run() -> None:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                rows = await session.execute(
                    select(OutboxJob.kind, OutboxJob.status, func.count()).group_by(OutboxJob.kind, OutboxJob.status))
                for kind, status, count in rows.all():
                    click.echo(f"{kind:24} {status.value:8} {count}")
        finally:
            await engine.dispose()

    asyncio.run(_run())


@outbox.command("retry-dead")
def outbox_retry_dead() -> None:
    """Put every dead job back in the queue (after fixing what made it fail)."""
    from sqlalchemy import update

    from core.db import make_engine, make_sessionmaker, utcnow
    from core.models import OutboxJob, OutboxStatus

    settings = _settings()

    async def _run() -> int:
        engine = make_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                result = await session.execute(
                    update(OutboxJob).where(OutboxJob.status == OutboxStatus.DEAD)
                    .values(status=OutboxStatus.PENDING, attempts=0, next_attempt_at=utcnow()))
                return int(result.rowcount)  # type: ignore[attr-defined]
        finally:
            await engine.dispose()

    click.echo(f"{asyncio.run(_run())} jobs requeued")


def _register_domain_commands() -> None:
    """Attach commands that domains and core channels contribute (classifier, asterisk, sms, …)."""
    import importlib

    from core.registry import channel_modules, domain_modules

    for module_name in (*channel_modules("cli"), *domain_modules("cli")):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue
        module.register(main)


_register_domain_commands()
