"""A protocol-faithful local Tencent Cloud SMS API (2021-01-11): TC3-HMAC-SHA256 checked, SendSms,
PullSmsSendStatusByPhoneNumber, and the status / reply callback bodies Tencent would POST to us.
Written from Tencent's documentation, independently of sms/providers/tencent.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.workflow_platform import free_port

_AUTH = re.compile(r"^TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/sms/tc3_request, "
                   r"SignedHeaders=([a-z;-]+), Signature=([0-9a-f]{64})$")
CN = dt.timezone(dt.timedelta(hours=8))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _mac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


@dataclass
class TencentSent:
    """One accepted SendSms."""

    phone: str
    template_id: str
    params: list[str]
    sign_name: str
    session_context: str
    serial_no: str
    at: dt.datetime


@dataclass
class TencentState:
    """What the fake has seen and how it misbehaves."""

    secret_id: str
    secret_key: str
    app_id: str
    templates: set[str]
    sent: list[TencentSent] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    signature_failures: int = 0
    blacklisted: set[str] = field(default_factory=set)
    daily_limited: set[str] = field(default_factory=set)
    slow_after_accept: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FakeTencentSms:
    """Runs the fake on a free port in a background thread."""

    def __init__(self, *, secret_id: str = "AKIDtest", secret_key: str = "tencent-secret",
                 app_id: str = "1400000001", templates: set[str] | None = None) -> None:
        """Prepare; call start()."""
        self.state = TencentState(secret_id=secret_id, secret_key=secret_key, app_id=app_id,
                                  templates=templates or set())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/", self._api, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> FakeTencentSms:
        """Start serving."""
        self._thread.start()
        for _ in range(100):
            if self._server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("fake Tencent did not start")

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def _error(self, code: str, message: str) -> JSONResponse:
        return JSONResponse({"Response": {"Error": {"Code": code, "Message": message},
                                          "RequestId": str(uuid.uuid4())}})

    def _verify(self, request: Request, body: bytes) -> str | None:
        match = _AUTH.match(request.headers.get("authorization", ""))
        if not match:
            return "AuthFailure.SignatureFailure"
        secret_id, date, signed_headers, signature = match.groups()
        if secret_id != self.state.secret_id:
            return "AuthFailure.SecretIdNotFound"
        try:
            timestamp = int(request.headers.get("x-tc-timestamp", ""))
        except ValueError:
            return "AuthFailure.SignatureFailure"
        if abs(time.time() - timestamp) > 300:
            return "AuthFailure.SignatureExpire"
        if dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d") != date:
            return "AuthFailure.SignatureFailure"
        names = signed_headers.split(";")
        if "content-type" not in names or "host" not in names:
            return "AuthFailure.SignatureFailure"
        canonical_headers = "".join(
            f"{name}:{request.headers.get(name, '').strip().lower() if name == 'x-tc-action' else request.headers.get(name, '').strip()}\n"
            for name in names)
        canonical = "\n".join(["POST", "/", "", canonical_headers, signed_headers, _sha(body)])
        scope = f"{date}/sms/tc3_request"
        to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope, _sha(canonical.encode())])
        key = _mac(_mac(_mac(("TC3" + self.state.secret_key).encode(), date), "sms"), "tc3_request")
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return "AuthFailure.SignatureFailure"
        return None

    async def _api(self, request: Request) -> JSONResponse:
        body = await request.body()
        error = self._verify(request, body)
        if error:
            with self.state.lock:
                self.state.signature_failures += 1
            return self._error(error, "The provided credentials could not be validated.")
        if request.headers.get("x-tc-version") != "2021-01-11":
            return self._error("InvalidParameter", "version")
        action = request.headers.get("x-tc-action", "")
        with self.state.lock:
            self.state.calls.append(action)
        data = json.loads(body)
        if action == "SendSms":
            return await self._send(data)
        if action == "PullSmsSendStatusByPhoneNumber":
            return self._pull(data)
        return self._error("InvalidAction", action)

    async def _send(self, data: dict[str, Any]) -> JSONResponse:
        st = self.state
        if data.get("SmsSdkAppId") != st.app_id:
            return self._error("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId")
        if data.get("TemplateId") not in st.templates:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved", "template")
        statuses = []
        for phone in data.get("PhoneNumberSet") or []:
            if not re.fullmatch(r"\+861\d{10}", phone):
                code, serial = "InvalidParameterValue.IncorrectPhoneNumber", ""
            elif phone in st.blacklisted:
                code, serial = "FailedOperation.PhoneNumberInBlacklist", ""
            elif phone in st.daily_limited:
                code, serial = "LimitExceeded.PhoneNumberDailyLimit", ""
            else:
                code, serial = "Ok", f"2028:{uuid.uuid4().int % 10**20:020d}"
                with st.lock:
                    st.sent.append(TencentSent(phone=phone, template_id=data["TemplateId"],
                                               params=list(data.get("TemplateParamSet") or []),
                                               sign_name=data.get("SignName", ""),
                                               session_context=data.get("SessionContext", ""), serial_no=serial,
                                               at=dt.datetime.now(dt.UTC)))
            statuses.append({"SerialNo": serial, "PhoneNumber": phone, "Fee": 1 if code == "Ok" else 0,
                             "SessionContext": data.get("SessionContext", ""), "Code": code,
                             "Message": "send success" if code == "Ok" else code, "IsoCode": "CN"})
        if st.slow_after_accept:
            await asyncio.sleep(st.slow_after_accept)
        return JSONResponse({"Response": {"SendStatusSet": statuses, "RequestId": str(uuid.uuid4())}})

    def _pull(self, data: dict[str, Any]) -> JSONResponse:
        begin = int(data.get("BeginTime") or 0)
        phone = data.get("PhoneNumber")
        with self.state.lock:
            rows = [s for s in self.state.sent if s.phone == phone and s.at.timestamp() >= begin]
        return JSONResponse({"Response": {"PullSmsSendStatusSet": [{
            "UserReceiveTime": int(s.at.timestamp()), "CountryCode": "86", "SubscriberNumber": s.phone[3:],
            "PhoneNumber": s.phone, "SerialNo": s.serial_no, "ReportStatus": "SUCCESS", "Description": "DELIVRD",
            "SessionContext": s.session_context} for s in rows[: int(data.get("Limit") or 100)]],
            "RequestId": str(uuid.uuid4())}})

    # --- callbacks Tencent would make ---

    def status_body(self, sms: TencentSent, *, success: bool = True) -> list[dict[str, Any]]:
        """The delivery-status callback JSON array for one message."""
        return [{"user_receive_time": dt.datetime.now(CN).strftime("%Y-%m-%d %H:%M:%S"), "nationcode": "86",
                 "mobile": sms.phone[3:], "report_status": "SUCCESS" if success else "FAIL",
                 "errmsg": "DELIVRD" if success else "MK:0005", "description": "用户短信送达成功" if success else "失败",
                 "sid": sms.serial_no}]

    def reply_body(self, phone: str, text: str) -> dict[str, Any]:
        """The reply callback JSON object for a citizen's SMS."""
        return {"extend": "", "mobile": phone.removeprefix("+86"), "nationcode": "86", "sign": "示例城管",
                "text": text, "time": int(time.time())}
