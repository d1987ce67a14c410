"""The built-in workflow: the 7-step loop as a state machine, for centres without their own platform."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.cases.models import Step
from core.db import utcnow
from core.workflow.models import WorkflowCase, WorkflowEvent
from core.workflow.ports import Receipt, StatusUpdate, Submission, WorkflowRejected
from kb.service import KnowledgeBase

# Applies a status update on the intake side inside the workflow's own transaction.
StatusSink = Callable[[AsyncSession, StatusUpdate], Awaitable[None]]


class Action(enum.StrEnum):
    """What a department or the centre can do to a case."""

    DISPATCH = "dispatch"
    HANDLE = "handle"
    FEEDBACK = "feedback"
    VERIFY = "verify"
    RATE = "rate"


# From which steps each action is allowed.
ALLOWED: dict[Action, tuple[Step, ...]] = {
    Action.DISPATCH: (Step.REGISTER, Step.DISPATCH),
    Action.HANDLE: (Step.DISPATCH,),
    Action.FEEDBACK: (Step.HANDLE, Step.DISPATCH),
    Action.VERIFY: (Step.FEEDBACK,),
    Action.RATE: (Step.CLOSE,),
}


class BuiltinWorkflow:
    """Stores workflow cases in the same database and reports every step to the intake in one transaction."""

    name = "builtin"

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], kb: KnowledgeBase, sink: StatusSink) -> None:
        """Bind the workflow to the database, the kb (deadlines, routing) and the intake's status sink."""
        self._sessions = sessions
        self._kb = kb
        self._sink = sink

    async def submit(self, submission: Submission) -> Receipt:
        """Create the case in 立案, or return the existing one for the same submit key."""
        async with self._sessions() as session, session.begin():
            existing = await session.scalar(
                select(WorkflowCase).where(WorkflowCase.submit_key == submission.submit_key)
            )
            if existing is not None:
                first = await session.scalar(
                    select(WorkflowEvent).where(WorkflowEvent.wf_case_id == existing.id, WorkflowEvent.seq == 1)
                )
                return Receipt(existing.number, Step.REGISTER, 1, first.at if first else existing.created_at,
                               existing.department, existing.deadline_at)
            case_type = self._kb.taxonomy.get(submission.case_type_code)
            if case_type is None:
                raise WorkflowRejected(f"unknown case type {submission.case_type_code}")
            from core.cases.service import next_daily_number

            now = utcnow()
            department = submission.department or self._kb.routing.department_for(
                case_type, district=submission.district
            )
            wf = WorkflowCase(
                number=await next_daily_number(session=session, prefix="case", width=5, now=now),
                submit_key=submission.submit_key,
                case_type_code=case_type.code,
                department=department,
                urgent=submission.urgent,
                step=Step.REGISTER,
                seq=1,
                deadline_at=self._kb.limits.deadline(case_type, start=now, urgent=submission.urgent),
                payload={"description": submission.description, "address": submission.address,
                         "district": submission.district, "lat": submission.lat, "lng": submission.lng,
                         "channel": submission.channel, "media": submission.media},
            )
            session.add(wf)
            await session.flush()
            session.add(WorkflowEvent(wf_case_id=wf.id, seq=1, step=Step.REGISTER, actor="centre", note="立案", at=now))
            return Receipt(wf.number, Step.REGISTER, 1, now, wf.department, wf.deadline_at)

    async def rate(self, *, case_number: str, score: int, comment: str | None, key: str) -> None:
        """Record the citizen's rating (评价) of a closed case."""
        async with self._sessions() as session, session.begin():
            wf = await self._get(session, case_number)
            if wf.step == Step.RATE:
                return
            await self.transition(session=session, wf=wf, action=Action.RATE, actor="citizen",
                                  note=comment, rating=score)

    async def check(self) -> bool:
        """The built-in workflow is up whenever the database is."""
        return True

    async def act(
        self,
        *,
        case_number: str,
        action: Action,
        actor: str,
        note: str | None = None,
        department: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        passed: bool | None = None,
    ) -> WorkflowCase:
        """Apply a department or centre action in its own transaction."""
        async with self._sessions() as session, session.begin():
            wf = await self._get(session, case_number, lock=True)
            await self.transition(session=session, wf=wf, action=action, actor=actor, note=note,
                                  department=department, attachments=attachments, passed=passed)
            return wf

    async def transition(
        self,
        *,
        session: AsyncSession,
        wf: WorkflowCase,
        action: Action,
        actor: str,
        note: str | None = None,
        department: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        passed: bool | None = None,
        rating: int | None = None,
    ) -> None:
        """Move the case through the loop and report each resulting step to the intake."""
        if wf.step not in ALLOWED[action]:
            raise WorkflowRejected(f"cannot {action.value} a case in step {wf.step.value}")
        steps: list[tuple[Step, str | None]]
        if action == Action.DISPATCH:
            if department:
                wf.department = department
            if not wf.department:
                raise WorkflowRejected("no department to dispatch to")
            steps = [(Step.DISPATCH, note or f"派遣至{self._kb.routing.department_name(wf.department)}")]
        elif action == Action.HANDLE:
            steps = [(Step.HANDLE, note or "开始处置")]
        elif action == Action.FEEDBACK:
            if not note:
                raise WorkflowRejected("feedback needs a description of what was done")
            steps = [(Step.FEEDBACK, note)]
        elif action == Action.VERIFY:
            if passed is None:
                raise WorkflowRejected("verify needs passed=true or false")
            if passed:
                steps = [(Step.VERIFY, note or "核查通过"), (Step.CLOSE, "结案")]
            else:
                wf.send_backs += 1
                steps = [(Step.VERIFY, note or "核查未通过"), (Step.HANDLE, "退回重新处置")]
        else:
            if rating is None or not 1 <= rating <= 5:
                raise WorkflowRejected("rating must be 1-5")
            steps = [(Step.RATE, note)]
        for step, step_note in steps:
            wf.seq += 1
            wf.step = step
            now = utcnow()
            event = WorkflowEvent(wf_case_id=wf.id, seq=wf.seq, step=step, actor=actor, note=step_note,
                                  attachments=list(attachments or []) if step == Step.FEEDBACK else [], at=now)
            session.add(event)
            await session.flush()
            await self._sink(session, StatusUpdate(
                case_number=wf.number, seq=wf.seq, step=step, at=now, submit_key=wf.submit_key, note=step_note,
                actor=actor, department=wf.department, deadline_at=wf.deadline_at,
                attachments=list(event.attachments), rating=rating if step == Step.RATE else None,
            ))

    async def _get(self, session: AsyncSession, case_number: str, *, lock: bool = False) -> WorkflowCase:
        stmt = select(WorkflowCase).where(WorkflowCase.number == case_number)
        if lock:
            stmt = stmt.with_for_update()
        wf = await session.scalar(stmt)
        if wf is None:
            raise WorkflowRejected(f"unknown case {case_number}")
        return wf
