"""Aliyun 短信服务 (Dysmsapi 2017-05-25) over signed HTTP (ACS3-HMAC-SHA256), with receipts and replies."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

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
from sms.schemas import AliyunReport, AliyunUplink

log = logging.getLogger(__name__)

API_VERSION = "2017-05-25"
ALGORITHM = "ACS3-HMAC-SHA256"
CHINA_TZ = ZoneInfo("Asia/Shanghai")  # Aliyun's SendDate and report times are Beijing time
# QuerySendDetails lists a send within seconds; before that "not found" proves nothing.
LOOKUP_SETTLE_SECONDS = 60

# This number, this content or this template can never go out as requested.
REJECTED_CODES = frozenset({
    "isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT", "isv.BLACK_KEY_CONTROL_LIMIT",
    "isv.PARAM_LENGTH_LIMIT", "isv.PARAM_NOT_SUPPORT_URL", "isv.INVALID_JSON_PARAM", "isv.INVALID_PARAMETERS",
    "isv.TEMPLATE_MISSING_PARAMETERS", "isv.TEMPLATE_PARAMS_ILLEGAL", "isv.SMS_CONTENT_ILLEGAL",
    "isv.CUSTOMER_REFUSED", "isv.BLACK_LIST", "isv.SMS_TEST_NUMBER_LIMIT", "isv.EXTEND_CODE_ERROR",
})
# Every message fails the same way until an operator fixes the account, signature or template.
MISCONFIGURED_CODES = frozenset({
    "isv.SMS_SIGNATURE_ILLEGAL", "isv.SMS_TEMPLATE_ILLEGAL", "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
    "isv.SIGN_NAME_ILLEGAL", "isv.TEMPLATE_NOT_EXIST", "isv.ACCOUNT_NOT_EXISTS", "isv.ACCOUNT_ABNORMAL",
    "isv.AMOUNT_NOT_ENOUGH", "isv.OUT_OF_SERVICE", "isv.PRODUCT_UN_SUBSCRIPT", "isv.PRODUCT_UNSUBSCRIBE",
    "isv.DENY_IP_RANGE", "isp.RAM_PERMISSION_DENY", "InvalidAccessKeyId.NotFound", "InvalidAccessKeyId.Inactive",
    "SignatureDoesNotMatch", "IncompleteSignature", "Forbidden.RAM", "NoPermission",
})
# Refused for now by a rate limit: (seconds to wait).
THROTTLED_CODES = {
    "isv.BUSINESS_LIMIT_CONTROL": 3600.0,
    "isv.DAY_LIMIT_CONTROL": 86400.0,
    "isv.MONTH_LIMIT_CONTROL": 86400.0,
    "Throttling": 60.0,
    "Throttling.User": 60.0,
    "Throttling.Api": 60.0,
}
# Refused before any work was done (clock skew, nonce collision): plain retry.
NOT_SENT_CODES = frozenset({"InvalidTimeStamp.Expired", "SignatureNonceUsed", "ServiceUnavailable"})


def percent_encode(value: str) -> str:
    """RFC 3986 encoding as Aliyun signs it (space %20, * %2A, ~ kept)."""
    return quote(value, safe="-_.~")


def canonical_query(params: dict[str, str]) -> str:
    """Sorted, encoded query string: the form the signature covers."""
    pairs = sorted((percent_encode(k), percent_encode(v)) for k, v in params.items())
    return "&".join(f"{k}={v}" for k, v in pairs)


def sign_request(
    *, method: str, host: str, action: str, query: dict[str, str], body: bytes, access_key_id: str,
    access_key_secret: str, now: dt.datetime | None = None, nonce: str | None = None,
) -> dict[str, str]:
    """Return the headers of an ACS3-HMAC-SHA256 signed RPC request (V3 signature)."""
    hashed_payload = hashlib.sha256(body).hexdigest()
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": API_VERSION,
        "x-acs-date": (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": hashed_payload,
    }
    signed = sorted(headers)
    canonical_headers = "".join(f"{name}:{headers[name].strip()}\n" for name in signed)
    signed_headers = ";".join(signed)
    canonical_request = "\n".join(
        [method, "/", canonical_query(query), canonical_headers, signed_headers, hashed_payload])
    string_to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"
    signature = hmac.new(access_key_secret.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers}," \
                               f"Signature={signature}"
    return headers


def aliyun_number(e164: str) -> str:
    """Mainland numbers without country code, others as country code + number (Aliyun's two formats)."""
    return e164[3:] if e164.startswith("+86") else e164.removeprefix("+")


def _beijing(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA_TZ).astimezone(dt.UTC)
    except ValueError:
        return None


class AliyunSender:
    """Template SMS through Aliyun: OutId carries our key, so receipts and lookups find our send."""

    name = "aliyun"

    def __init__(
        self,
        *,
        http: httpx.AsyncClient,
        endpoint: str,
        access_key_id: str,
        access_key_secret: str,
        sign_name: str,
        templates: dict[str, str],
        timeout: float = 10.0,
    ) -> None:
        """Configure the account; `templates` maps our template names to approved TemplateCodes."""
        self._http = http
        self._endpoint = endpoint.rstrip("/")
        self._host = httpx.URL(self._endpoint).netloc.decode()
        self._key_id = access_key_id
        self._secret = access_key_secret
        self._sign_name = sign_name
        self._templates = templates
        self._timeout = timeout

    async def _call(self, action: str, params: dict[str, str]) -> dict[str, Any]:
        query = canonical_query(params)
        headers = sign_request(method="POST", host=self._host, action=action, query=params, body=b"",
                               access_key_id=self._key_id, access_key_secret=self._secret)
        try:
            response = await self._http.post(f"{self._endpoint}/?{query}", headers=headers, content=b"",
                                             timeout=self._timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as err:
            raise SmsNotSent(f"aliyun unreachable: {type(err).__name__}") from err
        except httpx.HTTPError as err:
            raise SmsOutcomeUnknown(f"aliyun answer lost: {type(err).__name__}") from err
        try:
            data: dict[str, Any] = response.json()
        except ValueError as err:
            raise SmsOutcomeUnknown(f"aliyun HTTP {response.status_code} without JSON") from err
        data.setdefault("Code", f"HTTP{response.status_code}")
        data["_status"] = response.status_code
        return data

    async def send(self, message: SmsMessage) -> SendResult:
        """Call SendSms with the template of the notice and its variables."""
        code = self._templates.get(message.template)
        if not code:
            raise SmsRejected(f"no Aliyun TemplateCode configured for template {message.template!r}")
        data = await self._call("SendSms", {
            "PhoneNumbers": aliyun_number(message.to),
            "SignName": self._sign_name,
            "TemplateCode": code,
            "TemplateParam": json.dumps(message.params, ensure_ascii=False, separators=(",", ":")),
            "OutId": message.idempotency_key,
        })
        result_code = str(data.get("Code"))
        if result_code == "OK" and data.get("BizId"):
            return SendResult(provider_message_id=str(data["BizId"]), parts=segments(message.text))
        raise classify_error(result_code, str(data.get("Message") or ""), status=int(data["_status"]))

    async def lookup(self, message: SmsMessage, *, since: dt.datetime) -> Lookup:
        """Find our OutId among the number's sends since `since` (QuerySendDetails, per Beijing day)."""
        now = dt.datetime.now(dt.UTC)
        day = since.astimezone(CHINA_TZ).date()
        last = now.astimezone(CHINA_TZ).date()
        while day <= last:
            page = 1
            while page <= 20:
                data = await self._call("QuerySendDetails", {
                    "PhoneNumber": aliyun_number(message.to), "SendDate": day.strftime("%Y%m%d"),
                    "PageSize": "50", "CurrentPage": str(page),
                })
                if data.get("Code") != "OK":
                    log.warning("aliyun QuerySendDetails failed: %s", data.get("Code"))
                    return Lookup()
                items = (data.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
                for item in items:
                    if item.get("OutId") == message.idempotency_key and int(item.get("SendStatus") or 0) != 2:
                        # The DTO has no BizId; receipts match the send by OutId instead.
                        # "out:" marks an id we made up (service.LOOKUP_ID_PREFIX); the receipt brings the BizId.
                        return Lookup(SendResult(provider_message_id=f"out:{message.idempotency_key}",
                                                 parts=segments(message.text)), known=True)
                if page * 50 >= int(data.get("TotalCount") or 0):
                    break
                page += 1
            day += dt.timedelta(days=1)
        if (now - since).total_seconds() >= LOOKUP_SETTLE_SECONDS:
            return Lookup(known=True)
        return Lookup()

    def start(self, sink: SmsSink, loop: asyncio.AbstractEventLoop) -> None:
        """Aliyun pushes receipts and replies over HTTP; nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def check(self) -> bool:
        """The endpoint answers HTTPS (an unsigned request is refused, which proves it is reachable)."""
        try:
            await self._http.get(f"{self._endpoint}/", timeout=min(self._timeout, 3.0))
        except httpx.HTTPError:
            return False
        return True


def classify_error(code: str, message: str, *, status: int) -> Exception:
    """Translate an Aliyun error code into our error classes."""
    text = f"aliyun {code}: {message[:120]}"
    if code in REJECTED_CODES:
        return SmsRejected(text)
    if code in MISCONFIGURED_CODES:
        return SmsMisconfigured(text)
    if code in THROTTLED_CODES:
        return SmsThrottled(text, retry_after=THROTTLED_CODES[code])
    if code in NOT_SENT_CODES:
        return SmsNotSent(text)
    if status in (401, 403):
        return SmsMisconfigured(text)
    # isp.SYSTEM_ERROR, 5xx and unknown codes: the send may have happened (SendSms is not idempotent).
    return SmsOutcomeUnknown(text)


def receipt_from_report(item: AliyunReport) -> Receipt:
    """Turn one SmsReport item into a receipt (matched by OutId, else by BizId)."""
    return Receipt(provider="aliyun", provider_message_id=item.biz_id, reference=item.out_id or None,
                   delivered=item.success, code=(item.err_code or ("DELIVERED" if item.success else "FAILED"))[:32],
                   at=_beijing(item.report_time))


def inbound_from_uplink(item: AliyunUplink) -> Inbound:
    """Turn one SmsUp item into an incoming message."""
    return Inbound(provider="aliyun", external_id=str(item.sequence_id), sender=item.phone_number,
                   text=item.content, received_at=_beijing(item.send_time) or dt.datetime.now(dt.UTC))
