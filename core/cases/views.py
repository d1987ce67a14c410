"""Intake API: drafts in, decisions on them, cases out with their timeline."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import select

from core.cases import service
from core.cases.models import OPEN_DRAFT_STATUSES, STEP_LABELS, Case, DraftCase, DraftStatus
from core.cases.schemas import (
    MAX_TEXT,
    AcceptDraft,
    AnswerDraft,
    CaseEventRead,
    CaseRead,
    DraftCreate,
    DraftRead,
    Location,
    MergeDraft,
    RatingCreate,
    RejectDraft,
    masked,
)
from core.context import AppContext
from core.deps import Ctx, CurrentLogin
from kb.service import KnowledgeBase

router = APIRouter(prefix="/api", tags=["intake"])


def draft_read(draft: DraftCase, case_number: str | None = None) -> DraftRead:
    """Render a draft for output with the reporter's phone masked."""
    return DraftRead(
        id=draft.id,
        number=draft.number,
        channel=draft.channel,
        status=draft.status,
        text=draft.raw_text,
        media=list(draft.media),
        location=Location(lat=draft.lat, lng=draft.lng, address=draft.address, district=draft.district),
        reporter_name=draft.reporter_name,
        reporter_phone_masked=masked(service.citizen_phone(draft.citizen)),
        suggested_type_code=draft.suggested_type_code,
        suggested_department=draft.suggested_department,
        suggestion_confidence=draft.suggestion_confidence,
        reject_reason=draft.reject_reason,
        case_number=case_number,
        created_at=draft.created_at,
    )


def case_read(case: Case, kb: KnowledgeBase) -> CaseRead:
    """Render a case and its timeline."""
    case_type = kb.taxonomy.get(case.case_type_code)
    return CaseRead(
        id=case.id,
        number=case.number,
        state=case.state,
        step=case.step,
        step_label=STEP_LABELS[case.step],
        case_type_code=case.case_type_code,
        case_type_name=case_type.name if case_type else None,
        major_code=case.major_code,
        department=case.department,
        urgent=case.urgent,
        deadline_at=case.deadline_at,
        description=case.description,
        address=case.address,
        district=case.district,
        channel=case.channel,
        rating_score=case.rating_score,
        created_at=case.created_at,
        closed_at=case.closed_at,
        timeline=[
            CaseEventRead(step=e.step, step_label=STEP_LABELS[e.step], at=e.at, actor=e.actor, note=e.note,
                          attachments=list(e.attachments))
            for e in sorted(case.events, key=lambda e: (e.at, e.id))
        ],
    )


async def _fresh_case(ctx: AppContext, case_id: int) -> Case:
    async with ctx.sessions() as session:
        return await service.get_case(session=session, case_id=case_id)


@router.post("/drafts", status_code=201, response_model=DraftRead)
async def create_draft(
    data: DraftCreate,
    ctx: Ctx,
    login: CurrentLogin,
    idempotency_key: Annotated[str | None, Header(max_length=128)] = None,
) -> DraftRead:
    """Create a draft case (repeat-safe with `Idempotency-Key` or `source_key`)."""
    if idempotency_key and not data.source_key:
        data = data.model_copy(update={"source_key": f"idem:{idempotency_key}"})
    async with ctx.uow() as session:
        draft = await service.create_draft(session=session, data=data, kb=ctx.kb, region=ctx.settings.default_region)
        return draft_read(draft)


@router.get("/drafts", response_model=list[DraftRead])
async def list_drafts(
    ctx: Ctx,
    login: CurrentLogin,
    status: Annotated[DraftStatus | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[DraftRead]:
    """List drafts, oldest open ones first (the 待受理 inbox)."""
    async with ctx.sessions() as session:
        stmt = select(DraftCase)
        stmt = stmt.where(DraftCase.status == status) if status else stmt.where(
            DraftCase.status.in_(OPEN_DRAFT_STATUSES))
        drafts = await session.scalars(stmt.order_by(DraftCase.created_at, DraftCase.id).limit(limit))
        return [draft_read(d) for d in drafts]


@router.get("/drafts/{draft_id}", response_model=DraftRead)
async def get_draft(draft_id: int, ctx: Ctx, login: CurrentLogin) -> DraftRead:
    """Read one draft."""
    async with ctx.sessions() as session:
        draft = await service.get_draft(session=session, draft_id=draft_id)
        number = None
        if draft.status == DraftStatus.ACCEPTED:
            number = (await service.get_case_for_draft(session=session, draft=draft)).number
        return draft_read(draft, number)


@router.post("/drafts/{draft_id}/accept", response_model=CaseRead)
async def accept_draft(draft_id: int, data: AcceptDraft, ctx: Ctx, login: CurrentLogin) -> CaseRead:
    """立案: file the case and hand it to the workflow (repeat-safe: one draft gives one case)."""
    async with ctx.uow() as session:
        await ctx.fresh_knowledge(session)
        case = await service.accept_draft(session=session, kb=ctx.kb, draft_id=draft_id, data=data,
                                          operator=login.operator)
        case_id = case.id
    return case_read(await _fresh_case(ctx, case_id), ctx.kb)


@router.post("/drafts/{draft_id}/reject", response_model=DraftRead)
async def reject_draft(draft_id: int, data: RejectDraft, ctx: Ctx, login: CurrentLogin) -> DraftRead:
    """不予立案 with a reason."""
    async with ctx.uow() as session:
        return draft_read(await service.reject_draft(session=session, draft_id=draft_id, reason=data.reason,
                                                     operator=login.operator))


@router.post("/drafts/{draft_id}/merge", response_model=DraftRead)
async def merge_draft(draft_id: int, data: MergeDraft, ctx: Ctx, login: CurrentLogin) -> DraftRead:
    """Merge a duplicate into an existing case."""
    async with ctx.uow() as session:
        return draft_read(await service.merge_draft(session=session, draft_id=draft_id,
                                                    case_number=data.case_number, operator=login.operator))


@router.post("/drafts/{draft_id}/answer", response_model=DraftRead)
async def answer_draft(draft_id: int, data: AnswerDraft, ctx: Ctx, login: CurrentLogin) -> DraftRead:
    """Close a consultation answered on the call."""
    async with ctx.uow() as session:
        return draft_read(await service.answer_draft(session=session, draft_id=draft_id, answer=data.answer,
                                                     operator=login.operator))


class AutosaveBody(BaseModel):
    """The console form as the operator left it."""

    model_config = ConfigDict(extra="forbid")

    form: dict[str, Annotated[str, StringConstraints(max_length=MAX_TEXT)] | None] = Field(max_length=30)


@router.post("/drafts/{draft_id}/claim", response_model=DraftRead)
async def claim_draft(draft_id: int, ctx: Ctx, login: CurrentLogin) -> DraftRead:
    """签收 a draft so no other operator works on it."""
    async with ctx.uow() as session:
        return draft_read(await service.claim_draft(session=session, draft_id=draft_id, operator=login.operator))


@router.post("/drafts/{draft_id}/release", response_model=DraftRead)
async def release_draft(draft_id: int, ctx: Ctx, login: CurrentLogin) -> DraftRead:
    """Give a claimed draft back to the inbox."""
    async with ctx.uow() as session:
        return draft_read(await service.release_draft(session=session, draft_id=draft_id, operator=login.operator))


@router.post("/drafts/{draft_id}/autosave", status_code=204)
async def autosave_draft(draft_id: int, body: AutosaveBody, ctx: Ctx, login: CurrentLogin) -> None:
    """Save the operator's unfinished form."""
    async with ctx.uow() as session:
        await service.autosave_draft(session=session, draft_id=draft_id, operator=login.operator, form=body.form)


@router.post("/drafts/{draft_id}/reveal-phone")
async def reveal_phone(draft_id: int, request: Request, ctx: Ctx, login: CurrentLogin) -> dict[str, str | None]:
    """Show the reporter's full number (audited)."""
    async with ctx.uow() as session:
        phone = await service.reveal_phone(session=session, draft_id=draft_id, operator=login.operator,
                                           ip=request.client.host if request.client else None)
    return {"phone": phone}


@router.get("/cases/{number}", response_model=CaseRead)
async def get_case(number: str, ctx: Ctx, login: CurrentLogin) -> CaseRead:
    """Read a case by its workflow number, with the full timeline."""
    async with ctx.sessions() as session:
        return case_read(await service.get_case(session=session, number=number), ctx.kb)


@router.post("/cases/{number}/rating", response_model=CaseRead)
async def rate_case(number: str, data: RatingCreate, ctx: Ctx, login: CurrentLogin) -> CaseRead:
    """Record the citizen's rating given to a seat (e.g. on a callback)."""
    async with ctx.uow() as session:
        case = await service.get_case(session=session, number=number)
        await service.rate_case(session=session, case=case, score=data.score, channel=data.channel,
                                comment=data.comment, operator=login.operator)
        case_id = case.id
    return case_read(await _fresh_case(ctx, case_id), ctx.kb)
