"""Workflow endpoints: department-side actions on the built-in workflow, and the platform's webhook."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from core.cases.service import apply_status_update
from core.deps import Ctx
from core.errors import AppError, Conflict, InvalidInput, NotFound, Unauthorized
from core.models import ProcessedKey
from core.security import tokens_match
from core.workflow.builtin import Action, BuiltinWorkflow
from core.workflow.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, parse_update, verify_signature
from core.workflow.ports import WorkflowRejected

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/workflow", tags=["workflow"])


class Attachment(BaseModel):
    """A photo or document a department attaches to its feedback."""

    model_config = ConfigDict(extra="forbid")

    kind: Annotated[str, StringConstraints(max_length=16)] = "photo"
    url: Annotated[str, StringConstraints(max_length=1024)]


class ActionBody(BaseModel):
    """A department or centre action on a built-in workflow case."""

    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=2000)] | None = None
    department: Annotated[str, StringConstraints(max_length=64)] | None = None
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    passed: bool | None = None
    actor: Annotated[str, StringConstraints(max_length=64)] | None = None


class WorkflowNotBuiltin(Conflict):
    """Department actions exist only when the built-in workflow is in use."""

    error_id = "workflow-not-builtin"
    message = "当前使用外部工作流平台，请在平台中操作"


@router.post("/cases/{number}/{action}")
async def department_action(
    number: str,
    action: Action,
    body: ActionBody,
    ctx: Ctx,
    authorization: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """Apply a step (dispatch, handle, feedback, verify) as a department or the centre's dispatcher."""
    token = (authorization or "").removeprefix("Bearer ").strip()
    if not tokens_match(token, ctx.settings.department_api_token.get_secret_value()):
        raise Unauthorized("部门接口令牌无效", error_id="bad-department-token")
    if not isinstance(ctx.workflow, BuiltinWorkflow):
        raise WorkflowNotBuiltin()
    if action == Action.RATE:
        raise InvalidInput("评价请通过案件评价接口提交", error_id="rate-through-intake")
    try:
        wf = await ctx.workflow.act(
            case_number=number, action=action, actor=body.actor or "department", note=body.note,
            department=body.department, attachments=[a.model_dump() for a in body.attachments],
            passed=body.passed,
        )
    except WorkflowRejected as err:
        if "unknown case" in str(err):
            raise NotFound("案件不存在", error_id="case-not-found") from err
        raise Conflict(str(err), error_id="transition-not-allowed") from err
    ctx.outbox.wake()
    await ctx.bus.publish("case.step_changed", {"number": wf.number, "step": wf.step.value})
    return {"case_number": wf.number, "step": wf.step.value, "seq": wf.seq, "department": wf.department}


@router.post("/events", status_code=200)
async def platform_event(
    request: Request,
    ctx: Ctx,
    signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None,
    timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
) -> dict[str, Any]:
    """Receive a signed status change from the external platform (at-least-once, deduplicated)."""
    body = await request.body()
    secret = ctx.settings.workflow_webhook_secret.get_secret_value()
    if not verify_signature(secret, timestamp=timestamp, signature=signature, body=body):
        log.warning("workflow webhook with a bad or stale signature from %s", request.client)
        raise Unauthorized("签名无效", error_id="bad-signature")
    try:
        raw = json.loads(body)
        event_id = str(raw["event_id"])[:128]
        update = parse_update(raw)
    except (ValueError, KeyError, TypeError) as err:
        raise AppError("事件格式不正确", error_id="malformed-event", details=str(err)) from err
    async with ctx.uow() as session:
        seen = await session.scalar(
            select(ProcessedKey).where(ProcessedKey.scope == "wf-event", ProcessedKey.key == event_id)
        )
        if seen is not None:
            return {"status": "duplicate"}
        await apply_status_update(session=session, update=update, kb=ctx.kb, notices=ctx.notices)
        session.add(ProcessedKey(scope="wf-event", key=event_id, result={"seq": update.seq}))
    return {"status": "ok"}
