"""Outbox handlers that carry accepted cases and ratings to the workflow."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.cases.models import Case, DraftCase, Rating
from core.cases.notices import NoticeRouter
from core.cases.service import apply_status_update, receipt_update
from core.context import AppContext
from core.models import OutboxJob
from core.outbox import PermanentFailure, TemporaryFailure
from core.workflow.builtin import StatusSink
from core.workflow.ports import StatusUpdate, Submission, WorkflowError, WorkflowRejected
from kb.service import KnowledgeBase


def make_status_sink(*, kb: KnowledgeBase, notices: NoticeRouter) -> StatusSink:
    """Return the sink the built-in workflow calls inside its transaction."""

    async def sink(session: AsyncSession, update: StatusUpdate) -> None:
        await apply_status_update(session=session, update=update, kb=kb, notices=notices)

    return sink


def wire(ctx: AppContext) -> None:
    """Register the workflow outbox handlers."""

    async def submit(job: OutboxJob) -> None:
        async with ctx.sessions() as session:
            case = await session.get(Case, int(job.payload["case_id"]))
            if case is None:
                raise PermanentFailure("case vanished")
            draft = await session.get(DraftCase, case.draft_id)
        submission = Submission(
            submit_key=case.submit_key, case_type_code=case.case_type_code, description=case.description,
            channel=case.channel.value, reported_at=draft.created_at if draft else case.created_at,
            department=case.department, urgent=case.urgent, address=case.address, district=case.district,
            lat=case.lat, lng=case.lng, media=list(draft.media) if draft else [],
        )
        try:
            receipt = await ctx.workflow.submit(submission)
        except WorkflowRejected as err:
            raise PermanentFailure(str(err)) from err
        except WorkflowError as err:
            raise TemporaryFailure(str(err)) from err
        async with ctx.uow() as session:
            await apply_status_update(session=session, update=receipt_update(receipt, submit_key=case.submit_key),
                                      kb=ctx.kb, notices=ctx.notices)

    async def rate(job: OutboxJob) -> None:
        async with ctx.sessions() as session:
            case = await session.get(Case, int(job.payload["case_id"]))
            rating = await session.scalar(select(Rating).where(Rating.id == int(job.payload["rating_id"])))
        if case is None or rating is None:
            raise PermanentFailure("case or rating vanished")
        if case.number is None:
            raise TemporaryFailure("case has no workflow number yet")
        try:
            await ctx.workflow.rate(case_number=case.number, score=rating.score, comment=rating.comment,
                                    key=f"rate-{case.submit_key}")
        except WorkflowRejected as err:
            raise PermanentFailure(str(err)) from err
        except WorkflowError as err:
            raise TemporaryFailure(str(err)) from err

    ctx.outbox.register("workflow.submit", submit)
    ctx.outbox.register("workflow.rate", rate)
