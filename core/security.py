"""Operator authentication: argon2 password hashes, server-side sessions, CSRF tokens."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import record
from core.db import utcnow
from core.errors import InvalidInput, Unauthorized
from core.models import Operator, OperatorSession, Role

SESSION_COOKIE = "intake_session"
LOGIN_CSRF_COOKIE = "intake_login_csrf"
_hasher = PasswordHasher()
# Verifying against a fixed hash when the user is unknown keeps login timing uniform.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """Return the argon2id hash of a password."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Check a password against its hash without leaking which part failed."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def token_hash(token: str) -> str:
    """Hash a session token so a database leak does not leak live sessions."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """Return a random URL-safe token."""
    return secrets.token_urlsafe(32)


def tokens_match(a: str | None, b: str | None) -> bool:
    """Compare two tokens in constant time."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


async def create_operator(
    *, session: AsyncSession, username: str, password: str, display_name: str | None = None,
    role: Role = Role.AGENT, extension: str | None = None,
) -> Operator:
    """Create an operator account with a hashed password."""
    if len(password) < 8:
        raise InvalidInput("密码至少 8 位", error_id="weak-password")
    if await session.scalar(select(Operator.id).where(Operator.username == username)) is not None:
        raise InvalidInput("用户名已存在", error_id="username-taken")
    operator = Operator(username=username, display_name=display_name or username,
                        password_hash=hash_password(password), role=role, extension=extension)
    session.add(operator)
    await session.flush()
    await record(session=session, operator=None, action="operator.create", target_type="operator",
                 target_id=str(operator.id), details={"username": username, "role": role.value})
    return operator


async def login(
    *, session: AsyncSession, username: str, password: str, ip: str | None, user_agent: str | None
) -> tuple[str, OperatorSession]:
    """Check credentials and open a session; return the cookie token and the session row."""
    operator = await session.scalar(select(Operator).where(Operator.username == username))
    if operator is None or not operator.active:
        verify_password(_DUMMY_HASH, password)
        await record(session=session, operator=None, action="login.failed", actor=username[:64], ip=ip)
        raise Unauthorized("用户名或密码错误", error_id="bad-credentials")
    if not verify_password(operator.password_hash, password):
        await record(session=session, operator=operator, action="login.failed", ip=ip)
        raise Unauthorized("用户名或密码错误", error_id="bad-credentials")
    if _hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = hash_password(password)
    token = new_token()
    row = OperatorSession(token_hash=token_hash(token), operator_id=operator.id, csrf_token=new_token(),
                          ip=ip, user_agent=(user_agent or "")[:255])
    session.add(row)
    operator.last_login_at = utcnow()
    await record(session=session, operator=operator, action="login", ip=ip)
    await session.flush()
    row.operator = operator
    return token, row


async def resolve_session(
    *, session: AsyncSession, token: str | None, idle: dt.timedelta, max_age: dt.timedelta
) -> OperatorSession | None:
    """Return the live session for a cookie token, expiring idle or too-old sessions."""
    if not token:
        return None
    row = await session.get(OperatorSession, token_hash(token))
    if row is None:
        return None
    now = utcnow()
    if now - row.last_seen_at > idle or now - row.created_at > max_age or not row.operator.active:
        await session.delete(row)
        return None
    # Touch at most once a minute: a write per request would serialise SQLite.
    if now - row.last_seen_at > dt.timedelta(minutes=1):
        row.last_seen_at = now
    return row


async def logout(*, session: AsyncSession, token: str | None) -> None:
    """End a session."""
    if token:
        await session.execute(delete(OperatorSession).where(OperatorSession.token_hash == token_hash(token)))
