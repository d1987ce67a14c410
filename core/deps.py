"""FastAPI dependencies: the app context, the logged-in operator, role and CSRF checks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from core.context import AppContext
from core.errors import CsrfFailed, Forbidden, Unauthorized
from core.models import Operator, Role
from core.security import SESSION_COOKIE, resolve_session, tokens_match

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"


def get_ctx(request: Request) -> AppContext:
    """Return the context created by the lifespan."""
    ctx: AppContext = request.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


@dataclass(frozen=True, slots=True)
class Login:
    """The operator behind a request and their session's CSRF token."""

    operator: Operator
    csrf_token: str


async def optional_login(request: Request, ctx: Ctx) -> Login | None:
    """Return the operator of a valid session cookie, or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    async with ctx.uow() as session:
        row = await resolve_session(
            session=session,
            token=token,
            idle=dt.timedelta(minutes=ctx.settings.session_idle_minutes),
            max_age=dt.timedelta(hours=ctx.settings.session_max_hours),
        )
        if row is None:
            return None
        return Login(operator=row.operator, csrf_token=row.csrf_token)


async def require_login(request: Request, login: Annotated[Login | None, Depends(optional_login)]) -> Login:
    """Require a session; state-changing requests must also carry the session's CSRF token."""
    if login is None:
        raise Unauthorized()
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            form = await request.form()
            value = form.get("csrf_token")
            sent = value if isinstance(value, str) else None
        if not tokens_match(sent, login.csrf_token):
            raise CsrfFailed()
    return login


CurrentLogin = Annotated[Login, Depends(require_login)]


def require_role(*roles: Role) -> Any:
    """Build a dependency that allows only the given roles (admin is always allowed)."""

    async def _check(login: CurrentLogin) -> Login:
        if login.operator.role != Role.ADMIN and login.operator.role not in roles:
            raise Forbidden()
        return login

    return Depends(_check)
