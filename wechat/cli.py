"""`intake wechat …`: publish the custom menu."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
import httpx

from core.settings import Settings, get_settings
from wechat.client import WeChatApiError
from wechat.schemas import DEFAULT_MENU, Menu


def load_menu(path: Path | None) -> Menu:
    """Return the menu from a JSON file, or the default 我要上报 / 我的案件 / 办事指南."""
    if path is None:
        return DEFAULT_MENU
    try:
        return Menu.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except ValueError as err:
        raise click.ClickException(f"invalid menu file: {err}") from err


async def publish_menu(settings: Settings, menu: Menu) -> None:
    """Send the menu through menu/create with the shared access token."""
    from core.db import make_engine, make_sessionmaker
    from wechat.wiring import build_api

    engine = make_engine(settings)
    try:
        async with httpx.AsyncClient(timeout=httpx.Timeout(settings.wechat_http_timeout_seconds, connect=3.0)) as http:
            api = build_api(settings, make_sessionmaker(engine), http)
            if api is None:
                raise click.ClickException("set INTAKE_WECHAT_APP_ID and INTAKE_WECHAT_APP_SECRET first")
            await api.create_menu(menu.payload())
    finally:
        await engine.dispose()


def register(main: click.Group) -> None:
    """Add the `wechat` command group."""

    @main.group()
    def wechat() -> None:
        """WeChat official account."""

    @wechat.command("menu")
    @click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="JSON menu ({\"button\": [...]}) instead of the default one.")
    @click.option("--print", "print_only", is_flag=True, help="Only print the menu JSON.")
    def menu(path: Path | None, print_only: bool) -> None:
        """Create the custom menu (我要上报 / 我的案件 / 办事指南); clients show it within ~5 minutes."""
        chosen = load_menu(path)
        if print_only:
            click.echo(json.dumps(chosen.payload(), ensure_ascii=False, indent=2))
            return
        try:
            settings = get_settings()
        except ValueError as err:
            raise click.ClickException(f"invalid settings: {err}") from err
        try:
            asyncio.run(publish_menu(settings, chosen))
        except WeChatApiError as err:
            raise click.ClickException(f"WeChat refused the menu: {err}") from err
        click.echo(f"menu created: {' / '.join(b.name for b in chosen.button)}")
