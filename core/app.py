"""FastAPI app factory: the lifespan builds every long-lived client once and wires the domains."""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict

import httpx
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import text

from core import views as core_views
from core.bus import make_bus
from core.cases import views as case_views
from core.cases import wiring as case_wiring
from core.cases.notices import NoticeRouter
from core.context import AppContext
from core.db import make_engine, make_sessionmaker
from core.errors import install_error_handlers
from core.middleware import EdgeMiddleware
from core.outbox import OutboxWorker
from core.registry import channel_modules, domain_modules
from core.settings import Settings, get_settings
from core.status import ComponentStatus, Health, StatusRegistry
from core.workflow import views as workflow_views
from core.workflow.builtin import BuiltinWorkflow
from core.workflow.http import HttpWorkflow
from core.workflow.ports import WorkflowClient
from kb.service import KnowledgeBase

log = logging.getLogger(__name__)
CORE_DIR = Path(__file__).parent


class State(TypedDict):
    """Lifespan state: what every request sees as `request.state`."""

    ctx: AppContext


def make_templates() -> Jinja2Templates:
    """Jinja2 templates of the console, autoescaped (citizen text is hostile input)."""
    import jinja2

    from seat_console import TEMPLATE_DIR

    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
                                  jinja2.FileSystemLoader(str(CORE_DIR / "templates"))])
    env = jinja2.Environment(loader=loader, autoescape=True)
    return Jinja2Templates(env=env)


def build_context(settings: Settings, *, http: httpx.AsyncClient) -> AppContext:
    """Create the engine, bus, outbox, kb and workflow client for one process."""
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    kb = KnowledgeBase.load(start_hour=settings.workday_start_hour, end_hour=settings.workday_end_hour,
                            taxonomy_file=settings.kb_taxonomy_file, taxonomy_extra=settings.kb_taxonomy_extra_file)
    notices = NoticeRouter()
    workflow: WorkflowClient
    if settings.workflow_backend == "http":
        assert settings.workflow_url is not None
        workflow = HttpWorkflow(base_url=settings.workflow_url, api_key=settings.workflow_api_key.get_secret_value(),
                                http=http, timeout=settings.workflow_timeout_seconds)
    else:
        workflow = BuiltinWorkflow(sessions=sessions, kb=kb,
                                   sink=case_wiring.make_status_sink(kb=kb, notices=notices))
    return AppContext(
        settings=settings,
        engine=engine,
        sessions=sessions,
        bus=make_bus(settings.redis_url),
        outbox=OutboxWorker(sessions=sessions, settings=settings),
        kb=kb,
        workflow=workflow,
        notices=notices,
        status=StatusRegistry(),
        templates=make_templates(),
    )


def register_core_checks(ctx: AppContext) -> None:
    """Status checks for the database, Redis and the workflow."""

    async def db() -> ComponentStatus:
        async with ctx.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return ComponentStatus(Health.OK, ctx.engine.dialect.name)

    async def redis() -> ComponentStatus:
        ok = await ctx.bus.check()
        return ComponentStatus(Health.OK if ok else Health.FAIL, "pub/sub")

    async def workflow() -> ComponentStatus:
        ok = await ctx.workflow.check()
        return ComponentStatus(Health.OK if ok else Health.FAIL, ctx.workflow.name)

    ctx.status.register("db", db)
    if ctx.settings.redis_url:
        ctx.status.register("redis", redis)
    else:
        ctx.status.not_configured("redis", "in-process events (set INTAKE_REDIS_URL for several processes)")
    ctx.status.register("workflow", workflow)


def wire_domains(ctx: AppContext) -> None:
    """Let each domain register its handlers, channels and checks (wechat before sms: notice priority)."""
    from classifier import wiring as classifier_wiring
    from hotline import wiring as hotline_wiring
    from kb import wiring as kb_wiring
    from sms import wiring as sms_wiring
    from wechat import wiring as wechat_wiring

    case_wiring.wire(ctx)
    kb_wiring.wire(ctx)
    wechat_wiring.wire(ctx)
    sms_wiring.wire(ctx)
    hotline_wiring.wire(ctx)
    classifier_wiring.wire(ctx)
    for name in channel_modules("wiring"):
        importlib.import_module(name).wire(ctx)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; nothing connects until the lifespan starts."""
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with httpx.AsyncClient(follow_redirects=False) as http:
            ctx = build_context(settings, http=http)
            register_core_checks(ctx)
            wire_domains(ctx)
            await ctx.bus.start()
            if settings.outbox_worker:
                ctx.outbox.start()
            log.info("intake service started (db=%s, workflow=%s, events=%s)", ctx.engine.dialect.name,
                     ctx.workflow.name, "redis" if settings.redis_url else "in-process")
            try:
                yield {"ctx": ctx}
            finally:
                await ctx.outbox.stop()
                for closer in reversed(ctx.closers):
                    await closer()
                await ctx.bus.stop()
                await ctx.engine.dispose()

    app = FastAPI(
        title="城市管理热线受理服务 Intake API",
        version="0.1.0",
        description="Drafts in from every channel, decisions by the seats, cases through the workflow, "
        "notices back to the citizen. Errors are JSON: `{\"error\": {\"id\", \"message\", \"details\"}}`.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    app.add_middleware(EdgeMiddleware, max_body_bytes=settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=str(CORE_DIR / "static")), name="static")
    app.include_router(core_views.router)
    app.include_router(case_views.router)
    app.include_router(workflow_views.router)
    for name in (*channel_modules("views"), *domain_modules("views")):
        # Each domain with a views module contributes one APIRouter called `router`.
        app.include_router(importlib.import_module(name).router)
    return app


def app_from_env() -> FastAPI:
    """Entry point for `uvicorn --factory core.app:app_from_env`."""
    return create_app(get_settings())


__all__ = ["create_app", "app_from_env", "Any"]
