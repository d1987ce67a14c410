"""Console pages, server-rendered in Chinese; live parts update from /api/events."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import select

from core.audit import record
from core.cases import service as cases
from core.cases.models import OPEN_DRAFT_STATUSES, DraftStatus
from core.context import AppContext
from core.deps import Ctx, Login, optional_login, require_login
from core.errors import AppError, Forbidden
from core.models import ROLE_LABELS, Operator, Role
from core.phone import mask_phone
from core.security import create_operator
from kb import overrides as kb_overrides
from kb.search import KnowledgeIndex
from seat_console import service

router = APIRouter(include_in_schema=False)
MaybeLogin = Annotated[Login | None, Depends(optional_login)]


def _page(ctx: AppContext, request: Request, name: str, login: Login, **extra: Any) -> Response:
    context = {"operator": login.operator, "role_label": ROLE_LABELS[login.operator.role],
               "csrf_token": login.csrf_token, "is_admin": login.operator.role == Role.ADMIN,
               "is_lead": login.operator.role in (Role.ADMIN, Role.SUPERVISOR), **extra}
    response = ctx.templates.TemplateResponse(request, name, context)
    response.headers["Cache-Control"] = "no-store"
    return response


def _to_login() -> Response:
    return RedirectResponse("/login", status_code=303)


async def knowledge(ctx: AppContext) -> KnowledgeIndex:
    """The consultation index with every console edit applied (rebuilt when anyone edits)."""
    assert ctx.knowledge is not None
    async with ctx.sessions() as session:
        return await ctx.knowledge.refresh(session=session)


@router.get("/", response_class=HTMLResponse)
async def workspace(request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """坐席工作台: seat status, live call panel, the 待受理 inbox."""
    if login is None:
        return _to_login()
    async with ctx.sessions() as session:
        rows = await service.inbox(session=session, operator=login.operator)
    seat: dict[str, Any] | None = None
    if ctx.hotline is not None and hasattr(ctx.hotline, "seat_state") and login.operator.extension:
        try:
            seat = await ctx.hotline.seat_state(extension=login.operator.extension)
        except Exception:  # noqa: BLE001 - the workspace must open even when the PBX is down
            seat = None
    return _page(ctx, request, "workspace.html", login, rows=rows, seat=seat, local=service.local,
                 hotline_configured=ctx.hotline is not None)


@router.get("/inbox", response_class=HTMLResponse)
async def inbox_fragment(request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """The inbox table alone, refreshed live by the page script."""
    if login is None:
        return _to_login()
    async with ctx.sessions() as session:
        rows = await service.inbox(session=session, operator=login.operator)
    return _page(ctx, request, "_inbox.html", login, rows=rows, local=service.local)


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
async def draft_form(draft_id: int, request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """The draft form: text, place, suggestions (keys 1-3), duplicates, knowledge, decisions."""
    if login is None:
        return _to_login()
    async with ctx.sessions() as session:
        draft = await cases.get_draft(session=session, draft_id=draft_id)
        history = await service.history_for(session=session, citizen_id=draft.citizen_id, exclude_draft=draft.id)
        case_number = None
        if draft.status == DraftStatus.ACCEPTED:
            case_number = (await cases.get_case_for_draft(session=session, draft=draft)).number
        claimer = await session.get(Operator, draft.claimed_by) if draft.claimed_by else None
    form = dict(draft.form_state or {})
    text = form.get("description") or draft.raw_text
    suggestion = await service.suggest(ctx, text, draft.district)
    suggestions = list((suggestion or {}).get("suggestions") or [])[:3]
    hits = (await knowledge(ctx)).search(text, limit=3)
    if not suggestions and draft.suggested_type_code:
        case_type = ctx.kb.taxonomy.get(draft.suggested_type_code)
        suggestions = [{"code": draft.suggested_type_code, "name": case_type.name if case_type else "",
                        "score": draft.suggestion_confidence or 0.0}]
    department = (suggestion or {}).get("department") or draft.suggested_department
    extracted = (suggestion or {}).get("address")
    extracted_text = extracted.get("text") if isinstance(extracted, dict) else extracted
    extracted_district = extracted.get("district") if isinstance(extracted, dict) else None
    return _page(
        ctx, request, "draft.html", login, draft=draft, form=form, suggestions=suggestions,
        suggestion=suggestion or {}, department_name=ctx.kb.routing.department_name(department) if department else "",
        department=department or "", duplicates=list((suggestion or {}).get("duplicates") or []),
        hits=hits, history=history, case_number=case_number, reasons=service.REJECT_REASONS,
        open=draft.status in OPEN_DRAFT_STATUSES, claimer=claimer.display_name if claimer else None,
        mine=draft.claimed_by == login.operator.id, channel=service.CHANNEL_LABELS.get(draft.channel, ""),
        phone_masked=mask_phone(cases.citizen_phone(draft.citizen)), local=service.local,
        status_label=service.DRAFT_STATUS_LABELS[draft.status],
        case_types=sorted(ctx.kb.taxonomy.types.values(), key=lambda t: t.code),
        address=form.get("address") or draft.address or extracted_text or "",
        district=form.get("district") or draft.district or extracted_district or "",
    )


@router.get("/knowledge", response_class=HTMLResponse)
async def knowledge_page(request: Request, ctx: Ctx, login: MaybeLogin,
                         q: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Search the consultation knowledge base."""
    if login is None:
        return _to_login()
    hits = (await knowledge(ctx)).search(q, limit=10) if q else []
    return _page(ctx, request, "knowledge.html", login, q=q, hits=hits)


@router.get("/cases", response_class=HTMLResponse)
async def case_search(
    request: Request, ctx: Ctx, login: MaybeLogin,
    q: Annotated[str, Query(max_length=100)] = "", phone: Annotated[str, Query(max_length=32)] = "",
    case_type: Annotated[str, Query(max_length=8)] = "", state: Annotated[str, Query(max_length=16)] = "",
    date_from: Annotated[str, Query(max_length=10)] = "", date_to: Annotated[str, Query(max_length=10)] = "",
) -> Response:
    """案件查询 by number, place, phone, type, state and date."""
    if login is None:
        return _to_login()

    def _date(value: str) -> dt.date | None:
        try:
            return dt.date.fromisoformat(value) if value else None
        except ValueError:
            return None

    async with ctx.sessions() as session:
        results = await service.search_cases(
            session=session, kb=ctx.kb, q=q or None, phone=phone or None, case_type=case_type or None,
            state=state or None, date_from=_date(date_from), date_to=_date(date_to))
    return _page(ctx, request, "cases.html", login, results=results, q=q, phone=phone, case_type=case_type,
                 state=state, date_from=date_from, date_to=date_to)


@router.get("/cases/{number}", response_class=HTMLResponse)
async def case_page(number: str, request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """案件详情 with the full timeline, media, recordings, notices and rating."""
    if login is None:
        return _to_login()
    async with ctx.sessions() as session:
        case = await cases.get_case(session=session, number=number)
        detail = await service.case_detail(session=session, kb=ctx.kb, case=case)
    return _page(ctx, request, "case.html", login, local=service.local, **detail)


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard_page(request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """城管一张图: today's intake, outcomes, types, trend and queues."""
    if login is None:
        return _to_login()
    async with ctx.sessions() as session:
        stats = await service.dashboard(session=session, kb=ctx.kb, ctx=ctx)
    return _page(ctx, request, "dashboard.html", login, stats=stats)


@router.get("/api/dashboard")
async def dashboard_data(ctx: Ctx, login: Annotated[Login, Depends(require_login)]) -> JSONResponse:
    """The wallboard figures as JSON for live refresh."""
    async with ctx.sessions() as session:
        return JSONResponse(await service.dashboard(session=session, kb=ctx.kb, ctx=ctx))


def _require_admin(login: Login | None) -> Login:
    if login is None:
        raise Forbidden()
    if login.operator.role != Role.ADMIN:
        raise Forbidden("仅管理员可访问", error_id="admin-only")
    return login


@router.get("/admin/operators", response_class=HTMLResponse)
async def operators_page(request: Request, ctx: Ctx, login: MaybeLogin, error: str = "") -> Response:
    """Operators and roles (admin only)."""
    if login is None:
        return _to_login()
    _require_admin(login)
    async with ctx.sessions() as session:
        operators = list(await session.scalars(select(Operator).order_by(Operator.username)))
    return _page(ctx, request, "admin_operators.html", login, operators=operators, roles=ROLE_LABELS,
                 error=error[:100])


@router.post("/admin/operators")
async def operators_create(
    request: Request, ctx: Ctx, login: Annotated[Login, Depends(require_login)],
    username: Annotated[str, Form(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")],
    display_name: Annotated[str, Form(min_length=1, max_length=64)],
    password: Annotated[str, Form(min_length=8, max_length=256)],
    role: Annotated[Role, Form()],
    extension: Annotated[str, Form(max_length=16, pattern=r"^\d{0,16}$")] = "",
) -> Response:
    """Create an operator (audited)."""
    _require_admin(login)
    try:
        async with ctx.uow() as session:
            await create_operator(session=session, username=username, password=password, display_name=display_name,
                                  role=role, extension=extension or None)
            await record(session=session, operator=login.operator, action="admin.operator.create",
                         target_type="operator", target_id=username,
                         ip=request.client.host if request.client else None)
    except AppError as err:
        return RedirectResponse(f"/admin/operators?error={err.error_id}", status_code=303)
    return RedirectResponse("/admin/operators", status_code=303)


@router.post("/admin/operators/{operator_id}")
async def operators_update(
    operator_id: int, request: Request, ctx: Ctx, login: Annotated[Login, Depends(require_login)],
    role: Annotated[Role, Form()], active: Annotated[bool, Form()] = False,
    extension: Annotated[str, Form(max_length=16, pattern=r"^\d{0,16}$")] = "",
) -> Response:
    """Change an operator's role, seat or activity (audited)."""
    _require_admin(login)
    async with ctx.uow() as session:
        operator = await session.get(Operator, operator_id)
        if operator is None:
            raise AppError("操作员不存在", error_id="operator-not-found")
        if operator.id == login.operator.id and (role != Role.ADMIN or not active):
            return RedirectResponse("/admin/operators?error=cannot-demote-self", status_code=303)
        before = {"role": operator.role.value, "active": operator.active, "extension": operator.extension}
        operator.role, operator.active, operator.extension = role, active, extension or None
        await record(session=session, operator=login.operator, action="admin.operator.update",
                     target_type="operator", target_id=str(operator.id),
                     details={"before": before, "after": {"role": role.value, "active": active,
                                                          "extension": extension or None}},
                     ip=request.client.host if request.client else None)
    return RedirectResponse("/admin/operators", status_code=303)


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


@router.get("/admin/articles", response_class=HTMLResponse)
async def articles_page(request: Request, ctx: Ctx, login: MaybeLogin, q: str = "") -> Response:
    """Consultation articles (admin only)."""
    if login is None:
        return _to_login()
    _require_admin(login)
    index = await knowledge(ctx)
    articles = [h.article for h in index.search(q, limit=50)] if q else sorted(index.articles, key=lambda a: a.id)
    return _page(ctx, request, "admin_articles.html", login, articles=articles, q=q[:100])


@router.get("/admin/articles/{article_id}", response_class=HTMLResponse)
async def article_edit_page(article_id: str, request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """Edit one article (or create it when the id is new)."""
    if login is None:
        return _to_login()
    _require_admin(login)
    article = (await knowledge(ctx)).get(article_id)
    return _page(ctx, request, "admin_article.html", login, article=article, article_id=article_id[:64])


@router.post("/admin/articles/{article_id}")
async def article_save(
    article_id: Annotated[str, Path(pattern=r"^[a-z0-9-]{3,64}$")], request: Request, ctx: Ctx,
    login: Annotated[Login, Depends(require_login)],
    title: Annotated[str, Form(min_length=2, max_length=100)],
    category: Annotated[str, Form(max_length=20)],
    questions: Annotated[str, Form(max_length=2000)],
    answer: Annotated[str, Form(min_length=10, max_length=2000)],
    keywords: Annotated[str, Form(max_length=300)] = "",
    handoff: Annotated[str, Form(max_length=40)] = "",
    delete: Annotated[str, Form(max_length=3)] = "",
) -> Response:
    """Save or delete an article (audited; every process picks it up)."""
    _require_admin(login)
    data = None if delete else {
        "title": title, "category": category, "answer": answer, "handoff": handoff or None,
        "questions": [q.strip() for q in questions.splitlines() if q.strip()][:10],
        "keywords": [k.strip() for k in keywords.replace("，", ",").split(",") if k.strip()][:10],
    }
    async with ctx.uow() as session:
        await kb_overrides.save(session=session, kind="article", key=article_id, data=data,
                                operator=login.operator, ip=_ip(request))
    return RedirectResponse("/admin/articles", status_code=303)


@router.get("/admin/routing", response_class=HTMLResponse)
async def routing_page(request: Request, ctx: Ctx, login: MaybeLogin, major: str = "06") -> Response:
    """Responsible department per case type (admin only)."""
    if login is None:
        return _to_login()
    _require_admin(login)
    async with ctx.sessions() as session:
        await ctx.fresh_knowledge(session)
    types = [t for t in sorted(ctx.kb.taxonomy.types.values(), key=lambda t: t.code) if t.major_code == major[:2]]
    rows = [(t, ctx.kb.routing.department_for(t)) for t in types]
    departments = sorted(ctx.kb.routing.departments.items(), key=lambda d: str(d[1].get("name", d[0])))
    return _page(ctx, request, "admin_routing.html", login, rows=rows, departments=departments,
                 majors=ctx.kb.taxonomy.majors, major=major[:2])


@router.post("/admin/routing/{code}")
async def routing_save(
    code: Annotated[str, Path(pattern=r"^\d{5}$")], request: Request, ctx: Ctx,
    login: Annotated[Login, Depends(require_login)], department: Annotated[str, Form(max_length=64)],
) -> Response:
    """Route a case type to another department (audited)."""
    _require_admin(login)
    case_type = ctx.kb.taxonomy.get(code)
    if case_type is None or department not in ctx.kb.routing.departments:
        raise AppError("案件类型或部门不存在", error_id="unknown-routing-target")
    async with ctx.uow() as session:
        await kb_overrides.save(session=session, kind="routing", key=code, data={"department": department},
                                operator=login.operator, ip=_ip(request))
    return RedirectResponse(f"/admin/routing?major={case_type.major_code}", status_code=303)


@router.get("/admin/templates", response_class=HTMLResponse)
async def templates_page(request: Request, ctx: Ctx, login: MaybeLogin) -> Response:
    """Notice templates (admin only)."""
    if login is None:
        return _to_login()
    _require_admin(login)
    async with ctx.sessions() as session:
        await ctx.fresh_knowledge(session)
    assert ctx.knowledge is not None
    texts = dict(notice_texts(ctx))
    for name, data in ctx.knowledge.templates.items():
        if not data.get("deleted"):
            texts[name] = str(data.get("text", ""))
    return _page(ctx, request, "admin_templates.html", login, texts=texts)


@router.post("/admin/templates/{name}")
async def template_save(
    name: Annotated[str, Path(pattern=r"^[a-z_]{2,32}$")], request: Request, ctx: Ctx,
    login: Annotated[Login, Depends(require_login)], text: Annotated[str, Form(min_length=2, max_length=300)],
) -> Response:
    """Change a notice template's text (audited; checked to render before it is saved)."""
    _require_admin(login)
    from jinja2 import TemplateError

    from sms.templates import SmsTemplates

    try:
        SmsTemplates({name: text}, signature="").render(name, {
            "case_number": "2026112200001", "case_type": "暴露垃圾", "department": "环卫所",
            "deadline": "11月22日18:00", "note": "", "content": ""})
    except (TemplateError, ValueError) as err:
        raise AppError("模板格式不正确", error_id="bad-template", details=str(err)) from err
    async with ctx.uow() as session:
        await kb_overrides.save(session=session, kind="template", key=name, data={"text": text},
                                operator=login.operator, ip=_ip(request))
    return RedirectResponse("/admin/templates", status_code=303)


def notice_texts(ctx: AppContext) -> dict[str, str]:
    """The notice texts before console edits: the city's file (INTAKE_SMS_TEMPLATES_PATH) or the shipped one."""
    import yaml

    from sms.templates import TEMPLATES_FILE

    path = ctx.settings.sms_templates_path or TEMPLATES_FILE
    return {str(k): str(v) for k, v in (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).items()}
