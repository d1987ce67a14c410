"""Application errors with stable ids, and the handlers that render them as JSON."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class AppError(Exception):
    """An error the client can act on: HTTP status, stable `error_id`, Chinese message, details."""

    status_code = 400
    error_id = "bad-request"
    message = "请求有误"

    def __init__(self, message: str | None = None, *, details: Any = None, error_id: str | None = None) -> None:
        """Override the default message, id or details for one occurrence."""
        super().__init__(message or self.message)
        self.message = message or self.message
        self.details = details
        if error_id:
            self.error_id = error_id


class NotFound(AppError):
    """The record does not exist (or the caller may not know it exists)."""

    status_code = 404
    error_id = "not-found"
    message = "记录不存在"


class Conflict(AppError):
    """The record is in a state that does not allow the action."""

    status_code = 409
    error_id = "conflict"
    message = "当前状态不允许此操作"


class InvalidInput(AppError):
    """The request is well-formed but its content is not acceptable."""

    status_code = 422
    error_id = "invalid-input"
    message = "输入内容不合法"


class Unauthorized(AppError):
    """No valid login or credentials."""

    status_code = 401
    error_id = "unauthorized"
    message = "请先登录"


class Forbidden(AppError):
    """Logged in, but the role does not allow the action."""

    status_code = 403
    error_id = "forbidden"
    message = "无权执行此操作"


class CsrfFailed(Forbidden):
    """A state-changing request without a valid CSRF token."""

    error_id = "csrf-failed"
    message = "页面已过期，请刷新后重试"


class PayloadTooLarge(AppError):
    """The body exceeds the configured limit."""

    status_code = 413
    error_id = "body-too-large"
    message = "请求内容过大"


def error_body(error_id: str, message: str, details: Any = None) -> dict[str, Any]:
    """Build the one JSON error shape every endpoint uses."""
    body: dict[str, Any] = {"error": {"id": error_id, "message": message}}
    if details is not None:
        body["error"]["details"] = details
    return body


def install_error_handlers(app: FastAPI) -> None:
    """Render AppError, validation errors and HTTP errors in the shared shape."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> JSONResponse:
        log.info("rejected %s %s: %s", request.method, request.url.path, exc.error_id)
        return JSONResponse(error_body(exc.error_id, exc.message, exc.details), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            log.info("malformed JSON on %s %s", request.method, request.url.path)
            return JSONResponse(error_body("malformed-json", "请求体不是合法的 JSON"), status_code=400)
        details = [
            {"loc": [str(p) for p in e.get("loc", ())], "type": e.get("type"), "msg": e.get("msg")}
            for e in errors
        ]
        log.info("invalid request on %s %s: %s", request.method, request.url.path, details)
        return JSONResponse(error_body("invalid-request", "请求参数不合法", details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error_id = {404: "not-found", 405: "method-not-allowed", 413: "body-too-large"}.get(
            exc.status_code, f"http-{exc.status_code}"
        )
        return JSONResponse(error_body(error_id, str(exc.detail)), status_code=exc.status_code)
