"""Build the SMS gateway of the configured provider, subscribe SMS to case notices, register jobs and checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import httpx

from core.cases.models import CITIZEN_VISIBLE_STEPS
from core.context import AppContext
from core.models import Channel, Citizen, ContactKind, OutboxJob
from core.settings import Settings
from core.status import ComponentStatus, Health
from sms.client import FileSmsSender, Lookup, SendResult, SmsMessage, SmsMisconfigured, SmsSender, SmsSink
from sms.service import INBOUND_KIND, NOTICE_KIND, SEND_KIND, TEXT_KIND, QuietHours, SmsService, is_mobile
from sms.templates import SmsTemplates

log = logging.getLogger(__name__)

OUTBOX_KIND = NOTICE_KIND  # the notice channel's outbox kind (kept under its historical name)
__all__ = ["OUTBOX_KIND", "TEXT_KIND", "SmsNoticeChannel", "make_sender", "wire"]


class SmsNoticeChannel:
    """Reaches citizens who have a mobile number."""

    channel = Channel.SMS
    outbox_kind = NOTICE_KIND

    def address_for(self, citizen: Citizen) -> str | None:
        """Return the citizen's first mobile number (a landline cannot receive SMS)."""
        phones = [c.value for c in citizen.contacts if c.kind == ContactKind.PHONE]
        return next((p for p in phones if is_mobile(p)), None)


class UnconfiguredSender:
    """Stands in for a gateway whose settings are incomplete: nothing is sent, nothing is lost."""

    def __init__(self, name: str, problem: str) -> None:
        """Remember what is missing (shown on /status)."""
        self.name = name
        self.problem = problem

    async def send(self, message: SmsMessage) -> SendResult:
        """Refuse for now; the outbox keeps the message until the settings are fixed."""
        raise SmsMisconfigured(self.problem)

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """Nothing was ever sent."""
        return Lookup(known=True)

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def check(self) -> bool:
        """Never healthy."""
        return False


def _missing(settings: Settings, *names: str) -> list[str]:
    return [f"INTAKE_{n.upper()}" for n in names if not getattr(settings, n)]


def _secret(settings: Settings, name: str) -> str:
    value = getattr(settings, name)
    return "" if value is None else str(value.get_secret_value())


def callback_url(settings: Settings, path: str) -> str | None:
    """The public URL of one of our callbacks (with the secret token), or None when not configured."""
    if not settings.sms_public_base_url or settings.sms_callback_token is None:
        return None
    token = settings.sms_callback_token.get_secret_value()
    return f"{settings.sms_public_base_url.rstrip('/')}/sms/{path}/{token}"


def make_sender(settings: Settings, *, templates: SmsTemplates, http: httpx.AsyncClient) -> SmsSender:
    """Create the sender of the configured provider (an UnconfiguredSender when settings are missing)."""
    provider = settings.sms_provider
    notice_templates = sorted(set(CITIZEN_VISIBLE_STEPS.values()))
    if provider == "file":
        assert settings.sms_outbox_path is not None
        return FileSmsSender(settings.sms_outbox_path)
    if provider == "kannel":
        missing = _missing(settings, "sms_kannel_password", "sms_public_base_url", "sms_callback_token")
        dlr_url = callback_url(settings, "kannel/dlr")
        if missing or dlr_url is None:
            return UnconfiguredSender(provider, "missing " + ", ".join(missing))
        from sms.providers.kannel import KannelSender

        return KannelSender(http=http, url=settings.sms_kannel_url, username=settings.sms_kannel_username,
                            password=_secret(settings, "sms_kannel_password"), dlr_url=dlr_url,
                            sender=settings.sms_kannel_sender, smsc=settings.sms_kannel_smsc,
                            timeout=settings.sms_timeout_seconds)
    if provider == "aliyun":
        missing = _missing(settings, "sms_aliyun_access_key_id", "sms_aliyun_access_key_secret")
        unmapped = [t for t in notice_templates if t not in settings.sms_aliyun_templates]
        if unmapped:
            missing.append(f"INTAKE_SMS_ALIYUN_TEMPLATES for {', '.join(unmapped)}")
        if missing:
            return UnconfiguredSender(provider, "missing " + ", ".join(missing))
        from sms.providers.aliyun import AliyunSender

        assert settings.sms_aliyun_access_key_id is not None
        return AliyunSender(http=http, endpoint=settings.sms_aliyun_endpoint,
                            access_key_id=settings.sms_aliyun_access_key_id,
                            access_key_secret=_secret(settings, "sms_aliyun_access_key_secret"),
                            sign_name=settings.sms_signature, templates=dict(settings.sms_aliyun_templates),
                            timeout=settings.sms_timeout_seconds)
    if provider == "tencent":
        missing = _missing(settings, "sms_tencent_secret_id", "sms_tencent_secret_key", "sms_tencent_sdk_app_id")
        unmapped = [t for t in notice_templates if t not in settings.sms_tencent_templates]
        if unmapped:
            missing.append(f"INTAKE_SMS_TENCENT_TEMPLATES for {', '.join(unmapped)}")
        if missing:
            return UnconfiguredSender(provider, "missing " + ", ".join(missing))
        from sms.providers.tencent import TencentSender

        assert settings.sms_tencent_secret_id is not None and settings.sms_tencent_sdk_app_id is not None
        return TencentSender(http=http, endpoint=settings.sms_tencent_endpoint, region=settings.sms_tencent_region,
                             secret_id=settings.sms_tencent_secret_id,
                             secret_key=_secret(settings, "sms_tencent_secret_key"),
                             sdk_app_id=settings.sms_tencent_sdk_app_id, sign_name=settings.sms_signature,
                             templates=dict(settings.sms_tencent_templates),
                             variables={name: templates.variables(name) for name in templates.names},
                             timeout=settings.sms_timeout_seconds)
    missing = _missing(settings, "sms_smpp_host", "sms_smpp_system_id", "sms_smpp_password")
    if missing:
        return UnconfiguredSender(provider, "missing " + ", ".join(missing))
    from sms.providers.smpp import SmppSender

    assert settings.sms_smpp_host is not None and settings.sms_smpp_system_id is not None
    return SmppSender(host=settings.sms_smpp_host, port=settings.sms_smpp_port,
                      system_id=settings.sms_smpp_system_id, password=_secret(settings, "sms_smpp_password"),
                      system_type=settings.sms_smpp_system_type, source_addr=settings.sms_smpp_source_addr,
                      timeout=settings.sms_timeout_seconds,
                      enquire_link_seconds=settings.sms_smpp_enquire_link_seconds)


def build_service(ctx: AppContext) -> SmsService:
    """Create the templates, the sender and the service (without registering anything)."""
    settings = ctx.settings
    templates = SmsTemplates.load(signature=settings.sms_signature, path=settings.sms_templates_path)
    http = httpx.AsyncClient(follow_redirects=False)
    ctx.closers.append(http.aclose)
    sender = make_sender(settings, templates=templates, http=http)
    if isinstance(sender, UnconfiguredSender):
        log.error("SMS provider %s is not usable: %s (SMS stay queued until fixed)", sender.name, sender.problem)
    enabled = settings.sms_quiet_hours_enabled
    if enabled is None:
        # The file log reaches no phone, so by default it shows every message at once.
        enabled = settings.sms_provider != "file"
    quiet = QuietHours.parse(settings.sms_quiet_hours, tz=settings.sms_timezone) if enabled else None
    return SmsService(ctx=ctx, sender=sender, templates=templates, quiet_hours=quiet)


def wire(ctx: AppContext) -> SmsService:
    """Create the service, register the notice channel, the outbox handlers and the status check."""
    service = build_service(ctx)
    sender = service.sender
    ctx.notices.subscribe(SmsNoticeChannel(), priority=50)

    async def handle_notice(job: OutboxJob) -> None:
        await service.queue_notification(int(job.payload["notification_id"]))

    async def handle_text(job: OutboxJob) -> None:
        await service.send_text_job(job.payload)

    async def handle_send(job: OutboxJob) -> None:
        await service.process(int(job.payload["send_id"]))

    async def handle_inbound(job: OutboxJob) -> None:
        await service.handle_inbound(job.payload)

    ctx.outbox.register(NOTICE_KIND, handle_notice)
    ctx.outbox.register(TEXT_KIND, handle_text)
    ctx.outbox.register(SEND_KIND, handle_send)
    ctx.outbox.register(INBOUND_KIND, handle_inbound)
    sender.start(service, asyncio.get_running_loop())
    ctx.closers.append(sender.close)
    ctx.sms = service

    async def check() -> ComponentStatus:
        if isinstance(sender, UnconfiguredSender):
            return ComponentStatus(Health.FAIL, f"{sender.name}: {sender.problem}")
        ok = await sender.check()
        if ok and service.gateway_problem:
            return ComponentStatus(Health.FAIL, f"{sender.name}: {service.gateway_problem[:160]}")
        if ok and getattr(sender, "smsc_offline", False):
            return ComponentStatus(Health.FAIL, f"{sender.name}: SMSC link down, messages wait in the gateway")
        return ComponentStatus(Health.OK if ok else Health.FAIL, sender.name)

    ctx.status.register("sms_gateway", check)
    return service
