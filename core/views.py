"""Service endpoints: /status, /metrics, login and logout, the live event stream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, StringConstraints
from sqlalchemy import select

from core import security
from core.deps import Ctx, CurrentLogin, optional_login, require_role
from core.errors import AppError, CsrfFailed
from core.models import ROLE_LABELS, Operator, Role
from core.status import Health

router = APIRouter()


@router.get("/status", tags=["service"])
async def status(ctx: Ctx) -> JSONResponse:
    """Report each connection as ok / fail / not configured; 503 when a configured one fails."""
    results = await ctx.status.run()
    outbox = await ctx.outbox.counts()
    body: dict[str, Any] = {
        "status": "fail" if any(r.status == Health.FAIL for r in results.values()) else "ok",
        "components": {name: {"status": r.status.value, "detail": r.detail} for name, r in results.items()},
        "outbox": outbox,
    }
    return JSONResponse(body, status_code=503 if body["status"] == "fail" else 200)


@router.get("/healthz", tags=["service"], include_in_schema=False)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/metrics", tags=["service"], include_in_schema=False)
async def metrics(ctx: Ctx) -> Response:
    """Prometheus metrics."""
    await ctx.outbox.counts()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _set_session_cookie(response: Response, token: str, *, secure: bool) -> None:
    response.set_cookie(security.SESSION_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
async def login_page(request: Request, ctx: Ctx, error: str | None = None) -> Response:
    """The console login form (double-submit CSRF cookie before there is a session)."""
    token = security.new_token()
    response = ctx.templates.TemplateResponse(request, "login.html", {"csrf_token": token, "error": error})
    response.set_cookie(security.LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=ctx.settings.cookie_secure, path="/login")
    return response


@router.post("/login", include_in_schema=False)
async def login_form(
    request: Request,
    ctx: Ctx,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=128)],
) -> Response:
    """Log in from the form and go to the workspace."""
    if not security.tokens_match(csrf_token, request.cookies.get(security.LOGIN_CSRF_COOKIE)):
        raise CsrfFailed()
    try:
        async with ctx.uow() as session:
            token, _row = await security.login(
                session=session, username=username, password=password,
                ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"),
            )
    except AppError:
        return ctx.templates.TemplateResponse(
            request, "login.html", {"csrf_token": request.cookies.get(security.LOGIN_CSRF_COOKIE, ""),
                                    "error": "用户名或密码错误"}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    _set_session_cookie(response, token, secure=ctx.settings.cookie_secure)
    response.delete_cookie(security.LOGIN_CSRF_COOKIE, path="/login")
    return response


class LoginBody(BaseModel):
    """JSON login for API clients and tests."""

    username: Annotated[str, StringConstraints(max_length=64)]
    password: Annotated[str, StringConstraints(max_length=256)]


@router.post("/api/session", tags=["auth"])
async def api_login(body: LoginBody, request: Request, ctx: Ctx) -> JSONResponse:
    """Log in; the session cookie is set and the CSRF token returned for the X-CSRF-Token header."""
    async with ctx.uow() as session:
        token, row = await security.login(
            session=session, username=body.username, password=body.password,
            ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"),
        )
    response = JSONResponse({
        "csrf_token": row.csrf_token,
        "operator": {"username": row.operator.username, "display_name": row.operator.display_name,
                     "role": row.operator.role.value, "role_label": ROLE_LABELS[row.operator.role]},
    })
    _set_session_cookie(response, token, secure=ctx.settings.cookie_secure)
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, ctx: Ctx, login: CurrentLogin) -> Response:
    """End the session."""
    async with ctx.uow() as session:
        await security.logout(session=session, token=request.cookies.get(security.SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(security.SESSION_COOKIE, path="/")
    return response


@router.get("/api/events", tags=["live"])
async def live_events(request: Request, ctx: Ctx, login: CurrentLogin) -> StreamingResponse:
    """Server-sent events: drafts, case steps and calls as they happen (from every app process)."""
    operator_id = login.operator.id

    async def stream() -> AsyncIterator[bytes]:
        yield b": connected\n\n"
        events = ctx.bus.subscribe()
        next_event = asyncio.ensure_future(anext(events))
        try:
            while True:
                done, _ = await asyncio.wait({next_event}, timeout=15)
                if await request.is_disconnected():
                    break
                if not done:
                    yield b": keepalive\n\n"
                    continue
                event = next_event.result()
                next_event = asyncio.ensure_future(anext(events))
                target = event.data.get("operator_id")
                if target is not None and target != operator_id:
                    continue  # seat-specific events (screen pops) go to their operator only
                payload = json.dumps(event.data, ensure_ascii=False)
                yield f"event: {event.topic}\ndata: {payload}\n\n".encode()
        finally:
            next_event.cancel()
            await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


__all__ = ["router", "optional_login"]


class OperatorRead(BaseModel):
    """An operator account as administrators see it."""

    id: int
    username: str
    display_name: str
    role: str
    role_label: str
    extension: str | None
    active: bool


@router.get("/api/operators", tags=["admin"], response_model=list[OperatorRead],
            dependencies=[require_role(Role.SUPERVISOR)])
async def list_operators(ctx: Ctx) -> list[OperatorRead]:
    """List operator accounts (值班长 and admin only)."""
    async with ctx.sessions() as session:
        operators = await session.scalars(select(Operator).order_by(Operator.username))
        return [OperatorRead(id=o.id, username=o.username, display_name=o.display_name, role=o.role.value,
                             role_label=ROLE_LABELS[o.role], extension=o.extension, active=o.active)
                for o in operators]
