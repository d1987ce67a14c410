"""Tencent Cloud SMS (API 2021-01-11) over signed HTTP (TC3-HMAC-SHA256), with status and reply callbacks."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
from typing import Any

import httpx

from sms.client import (
    Inbound,
    Lookup,
    Receipt,
    SendResult,
    SmsMessage,
    SmsMisconfigured,
    SmsNotSent,
    SmsOutcomeUnknown,
    SmsRejected,
    SmsSink,
    SmsThrottled,
    segments,
)
from sms.schemas import TencentReply, TencentStatus

log = logging.getLogger(__name__)

API_VERSION = "2021-01-11"
SERVICE = "sms"
ALGORITHM = "TC3-HMAC-SHA256"
CONTENT_TYPE = "application/json; charset=utf-8"

REJECTED_CODES = frozenset({
    "InvalidParameterValue.IncorrectPhoneNumber", "FailedOperation.PhoneNumberInBlacklist",
    "FailedOperation.ContainSensitiveWord", "InvalidParameterValue.TemplateParameterFormatError",
    "InvalidParameterValue.TemplateParameterLengthLimit", "InvalidParameterValue.ContentLengthLimit",
    "FailedOperation.FailResolvePacket", "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
    "UnsupportedOperation.UnsupportedRegion", "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
    "FailedOperation.PhoneNumberParseFail", "FailedOperation.MarketingSendTimeConstraint",
})
MISCONFIGURED_CODES = frozenset({
    "FailedOperation.SignatureIncorrectOrUnapproved", "FailedOperation.TemplateIncorrectOrUnapproved",
    "FailedOperation.InsufficientBalanceInSmsPackage", "FailedOperation.TemplateUnapprovedOrNotExist",
    "FailedOperation.TemplateIdNotExist", "FailedOperation.MissingSignature",
    "FailedOperation.MissingSignatureToModify", "InvalidParameterValue.SdkAppIdNotExist",
    "InvalidParameterValue.MissingSignatureList", "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
    "UnauthorizedOperation.IndividualUserMarketingSmsPermissionDeny", "UnauthorizedOperation.RequestPermissionDeny",
    "UnauthorizedOperation.SerivceSuspendDueToArrears", "UnauthorizedOperation.RequestIpNotInWhitelist",
    "FailedOperation.ServiceSuspendDueToArrears",
})
THROTTLED_CODES = {
    "LimitExceeded.PhoneNumberThirtySecondLimit": 30.0,
    "LimitExceeded.PhoneNumberOneHourLimit": 3600.0,
    "LimitExceeded.PhoneNumberDailyLimit": 86400.0,
    "LimitExceeded.PhoneNumberSameContentDailyLimit": 86400.0,
    "LimitExceeded.DeliveryFrequencyLimit": 60.0,
    "LimitExceeded.AppDailyLimit": 86400.0,
    "LimitExceeded.AppGlobalDailyLimit": 86400.0,
    "LimitExceeded.AppMainlandChinaDailyLimit": 86400.0,
    "RequestLimitExceeded": 5.0,
}
NOT_SENT_CODES = frozenset({"InternalError.RequestTimeException", "InternalError.SigFieldMissing"})


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def sign_request(
    *, host: str, action: str, payload: bytes, secret_id: str, secret_key: str, timestamp: int
) -> dict[str, str]:
    """Return the Authorization header of a TC3-HMAC-SHA256 signed POST (signs content-type, host, action)."""
    date = dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")
    canonical_headers = f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-tc-action:{action.lower()}\n"
    signed_headers = "content-type;host;x-tc-action"
    canonical_request = "\n".join(
        ["POST", "/", "", canonical_headers, signed_headers, hashlib.sha256(payload).hexdigest()])
    scope = f"{date}/{SERVICE}/tc3_request"
    string_to_sign = "\n".join(
        [ALGORITHM, str(timestamp), scope, hashlib.sha256(canonical_request.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode(), date), SERVICE), "tc3_request")
    signature = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    return {"Authorization": f"{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, "
                             f"Signature={signature}"}


class TencentSender:
    """Template SMS through Tencent Cloud: SessionContext carries our key (echoed in pulled statuses)."""

    name = "tencent"

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        endpoint: str,
        region: str,
        secret_id: str,
        secret_key: str,
        sdk_app_id: str,
        sign_name: str,
        templates: dict[str, str],
        variables: dict[str, list[str]],
        timeout: float = 10.0,
    ) -> None:
        """Configure the account; `templates` maps template names to TemplateIds, `variables` gives their order."""
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._host = httpx.URL(self._endpoint).netloc.decode()
        self._region = region
        self._secret_id = secret_id
        self._secret_key = secret_key
        self._app_id = sdk_app_id
        self._sign_name = sign_name
        self._templates = templates
        self._variables = variables
        self._timeout = timeout

    async def _call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = int(dt.datetime.now(dt.UTC).timestamp())
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": action,
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": self._region,
            **sign_request(host=self._host, action=action, payload=payload, secret_id=self._secret_id,
                           secret_key=self._secret_key, timestamp=timestamp),
        }
        try:
            response = await self._http.post(f"{self._endpoint}/", content=payload, headers=headers,
                                             timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            raise SmsNotSent(f"tencent unreachable: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise SmsOutcomeUnknown(f"tencent answer lost: {type(err).__name__}") from err
        try:
            data = response.json()["Response"]
        except (ValueError, KeyError, TypeError) as err:
            raise SmsOutcomeUnknown(f"tencent HTTP {response.status_code} without a Response") from err
        if not isinstance(data, dict):
            raise SmsOutcomeUnknown("tencent answered an unexpected Response")
        return data

    async def send(self, message: SmsMessage) -> SendResult:
        """Call SendSms with the positional variables of the template."""
        template_id = self._templates.get(message.template)
        if not template_id:
            raise SmsRejected(f"no Tencent TemplateId configured for template {message.template!r}")
        names = self._variables.get(message.template, list(message.params))
        data = await self._call("SendSms", {
            "PhoneNumberSet": [message.to],
            "SmsSdkAppId": self._app_id,
            "TemplateId": template_id,
            "SignName": self._sign_name,
            "TemplateParamSet": [message.params.get(name, "") for name in names],
            "SessionContext": message.idempotency_key,
        })
        error = data.get("Error")
        if error:
            raise classify_error(str(error.get("Code")), str(error.get("Message") or ""))
        statuses = data.get("SendStatusSet") or []
        if not statuses:
            raise SmsOutcomeUnknown("tencent answered without a SendStatusSet")
        status = statuses[0]
        if status.get("Code") == "Ok" and status.get("SerialNo"):
            return SendResult(provider_message_id=str(status["SerialNo"]), parts=int(status.get("Fee") or 0)
                              or segments(message.text))
        raise classify_error(str(status.get("Code")), str(status.get("Message") or ""))

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """Look for our SessionContext among the number's pulled statuses (only sends with a receipt show)."""
        begin = int(since.timestamp()) - 60
        data = await self._call("PullSmsSendStatusByPhoneNumber", {
            "BeginTime": begin, "Offset": 0, "Limit": 100, "PhoneNumber": message.to, "SmsSdkAppId": self._app_id,
        })
        if data.get("Error"):
            log.warning("tencent PullSmsSendStatusByPhoneNumber failed: %s", data["Error"].get("Code"))
            return Lookup()
        for item in data.get("PullSmsSendStatusSet") or []:
            if item.get("SessionContext") == message.idempotency_key and item.get("SerialNo"):
                return Lookup(SendResult(provider_message_id=str(item["SerialNo"]), parts=segments(message.text)),
                              known=True)
        # A send without a receipt yet is not listed: absence proves nothing.
        return Lookup()

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Tencent calls us over HTTP; nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def check(self) -> bool:
        """The endpoint answers HTTPS."""
        try:
            await self._http.get(f"{self._endpoint}/", timeout=min(self._timeout, 3.0))
        except httpx.HTTPError:
            return False
        return True


def classify_error(code: str, message: str) -> Exception:
    """Translate a Tencent error code into our error classes."""
    text = f"tencent {code}: {message[:120]}"
    if code in REJECTED_CODES:
        return SmsRejected(text)
    if code in MISCONFIGURED_CODES or code.startswith(("AuthFailure", "UnauthorizedOperation")):
        return SmsMisconfigured(text)
    if code in THROTTLED_CODES:
        return SmsThrottled(text, retry_after=THROTTLED_CODES[code])
    if code in NOT_SENT_CODES:
        return SmsNotSent(text)
    return SmsOutcomeUnknown(text)


def _local_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=dt.timezone(dt.timedelta(hours=8))).astimezone(dt.UTC)
    except ValueError:
        return None


def receipt_from_status(item: TencentStatus) -> Receipt:
    """Turn one status-callback item into a receipt (matched by sid = SerialNo)."""
    delivered = item.report_status.upper() == "SUCCESS"
    return Receipt(provider="tencent", provider_message_id=item.sid, delivered=delivered,
                   code=(item.errmsg or item.report_status)[:32], at=_local_time(item.user_receive_time))


def inbound_from_reply(item: TencentReply) -> Inbound:
    """Turn a reply callback into an incoming message (Tencent gives no id: the content and time are the key)."""
    sender = f"+{item.nationcode}{item.mobile}" if not item.mobile.startswith("+") else item.mobile
    digest = hashlib.sha256(f"{sender}|{item.time}|{item.text}".encode()).hexdigest()[:32]
    return Inbound(provider="tencent", external_id=digest, sender=sender, text=item.text,
                   received_at=dt.datetime.fromtimestamp(item.time, dt.UTC))
