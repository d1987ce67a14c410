"""A protocol-faithful local Aliyun Dysmsapi (2017-05-25): V3 signature checked, SendSms, QuerySendDetails,
and the SmsReport / SmsUp push bodies Aliyun would POST to us. Written from Aliyun's documentation,
independently of sms/providers/aliyun.py, so a signing bug on either side shows up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.workflow_platform import free_port

BEIJING = ZoneInfo("Asia/Shanghai")
SIGNED_REQUIRED = {"host", "x-acs-action", "x-acs-version", "x-acs-date", "x-acs-signature-nonce",
                   "x-acs-content-sha256"}


def _enc(value: str) -> str:
    return quote(value, safe="-_.~")


@dataclass
class SentSms:
    """One accepted SendSms call."""

    phone: str
    sign_name: str
    template_code: str
    params: dict[str, str]
    out_id: str
    biz_id: str
    at: dt.datetime


@dataclass
class AliyunState:
    """What the fake has seen, and how it should misbehave."""

    access_key_id: str
    access_key_secret: str
    sign_names: set[str]
    templates: set[str]
    sent: list[SentSms] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    signature_failures: int = 0
    nonces: set[str] = field(default_factory=set)
    blacklisted: set[str] = field(default_factory=set)
    throttled: set[str] = field(default_factory=set)
    down: bool = False
    # Seconds to wait after accepting a SendSms before answering (a client timeout loses the answer).
    slow_after_accept: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent_to(self, phone: str) -> list[SentSms]:
        """Messages accepted for a number (mainland numbers without +86)."""
        with self.lock:
            return [s for s in self.sent if s.phone == phone]


class FakeAliyunSms:
    """Runs the fake in a background thread on a free port."""

    def __init__(self, *, access_key_id: str = "LTAI-test", access_key_secret: str = "aliyun-secret",
                 sign_names: set[str] | None = None, templates: set[str] | None = None) -> None:
        """Prepare; call start()."""
        self.state = AliyunState(access_key_id=access_key_id, access_key_secret=access_key_secret,
                                 sign_names=sign_names or {"示例城管"}, templates=templates or set())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/", self._rpc, methods=["GET", "POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> FakeAliyunSms:
        """Start serving."""
        self._thread.start()
        for _ in range(100):
            if self._server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("fake Aliyun did not start")

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=5)

    # --- signature ---

    def _verify(self, request: Request, params: dict[str, str], body: bytes) -> str | None:
        """Return an error code when the V3 signature does not hold."""
        auth = request.headers.get("authorization", "")
        if not auth.startswith("ACS3-HMAC-SHA256 "):
            return "IncompleteSignature"
        fields = dict(part.split("=", 1) for part in auth.removeprefix("ACS3-HMAC-SHA256 ").split(","))
        if fields.get("Credential") != self.state.access_key_id:
            return "InvalidAccessKeyId.NotFound"
        signed = fields.get("SignedHeaders", "").split(";")
        if not SIGNED_REQUIRED <= set(signed) or signed != sorted(signed):
            return "IncompleteSignature"
        if request.headers.get("x-acs-content-sha256") != hashlib.sha256(body).hexdigest():
            return "SignatureDoesNotMatch"
        stamp = request.headers.get("x-acs-date", "")
        try:
            sent = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            return "InvalidTimeStamp.Format"
        if abs((dt.datetime.now(dt.UTC) - sent).total_seconds()) > 900:
            return "InvalidTimeStamp.Expired"
        query = "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in params.items()))
        headers = "".join(f"{name}:{request.headers.get(name, '').strip()}\n" for name in signed)
        canonical = f"{request.method}\n/\n{query}\n{headers}\n{';'.join(signed)}\n{hashlib.sha256(body).hexdigest()}"
        to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
        expected = hmac.new(self.state.access_key_secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "SignatureDoesNotMatch"
        nonce = request.headers.get("x-acs-signature-nonce", "")
        with self.state.lock:
            if nonce in self.state.nonces:
                return "SignatureNonceUsed"
            self.state.nonces.add(nonce)
        return None

    # --- API ---

    async def _rpc(self, request: Request) -> JSONResponse:
        request_id = str(uuid.uuid4()).upper()
        if self.state.down:
            return JSONResponse({"Code": "ServiceUnavailable", "Message": "maintenance", "RequestId": request_id},
                                status_code=503)
        body = await request.body()
        params = dict(parse_qsl(request.url.query, keep_blank_values=True))
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        error = self._verify(request, params, body)
        if error:
            with self.state.lock:
                self.state.signature_failures += 1
            return JSONResponse({"Code": error, "Message": "Specified signature is not matched with our calculation.",
                                 "RequestId": request_id}, status_code=400)
        action = request.headers.get("x-acs-action", "")
        with self.state.lock:
            self.state.calls.append(action)
        if request.headers.get("x-acs-version") != "2017-05-25":
            return JSONResponse({"Code": "InvalidVersion", "RequestId": request_id}, status_code=400)
        if action == "SendSms":
            return await self._send(params, request_id)
        if action == "QuerySendDetails":
            return self._query(params, request_id)
        return JSONResponse({"Code": "InvalidAction.NotFound", "RequestId": request_id}, status_code=404)

    async def _send(self, params: dict[str, str], request_id: str) -> JSONResponse:
        st = self.state
        phone = params.get("PhoneNumbers", "")
        if params.get("SignName") not in st.sign_names:
            return JSONResponse({"Code": "isv.SMS_SIGNATURE_ILLEGAL", "Message": "签名不合法", "RequestId": request_id})
        if params.get("TemplateCode") not in st.templates:
            return JSONResponse({"Code": "isv.SMS_TEMPLATE_ILLEGAL", "Message": "模板不合法", "RequestId": request_id})
        if not (phone.isdigit() and len(phone) == 11 and phone.startswith("1")):
            return JSONResponse({"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号", "RequestId": request_id})
        if phone in st.blacklisted:
            return JSONResponse({"Code": "isv.BLACK_KEY_CONTROL_LIMIT", "Message": "黑名单管控", "RequestId": request_id})
        if phone in st.throttled:
            return JSONResponse({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "业务限流", "RequestId": request_id})
        try:
            template_params = json.loads(params.get("TemplateParam") or "{}")
        except ValueError:
            return JSONResponse({"Code": "isv.INVALID_JSON_PARAM", "Message": "JSON参数不合法", "RequestId": request_id})
        biz_id = f"{int(time.time() * 1000)}^{len(st.sent) + 1:010d}"
        with st.lock:
            st.sent.append(SentSms(phone=phone, sign_name=params["SignName"], template_code=params["TemplateCode"],
                                   params=template_params, out_id=params.get("OutId", ""), biz_id=biz_id,
                                   at=dt.datetime.now(dt.UTC)))
        if st.slow_after_accept:
            await asyncio.sleep(st.slow_after_accept)
        return JSONResponse({"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": request_id})

    def _query(self, params: dict[str, str], request_id: str) -> JSONResponse:
        phone = params.get("PhoneNumber", "")
        day = params.get("SendDate", "")
        size = min(int(params.get("PageSize") or 10), 50)
        page = max(int(params.get("CurrentPage") or 1), 1)
        rows = [s for s in self.state.sent_to(phone) if s.at.astimezone(BEIJING).strftime("%Y%m%d") == day]
        chunk = rows[(page - 1) * size: page * size]
        return JSONResponse({
            "Code": "OK", "Message": "OK", "RequestId": request_id, "TotalCount": len(rows),
            "SmsSendDetailDTOs": {"SmsSendDetailDTO": [{
                "PhoneNum": s.phone, "SendStatus": 3, "ErrCode": "DELIVERED", "TemplateCode": s.template_code,
                "Content": json.dumps(s.params, ensure_ascii=False), "OutId": s.out_id,
                "SendDate": s.at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                "ReceiveDate": s.at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
            } for s in chunk]},
        })

    # --- pushes Aliyun would make ---

    def report_body(self, sms: SentSms, *, success: bool = True, err_code: str = "DELIVERED") -> list[dict[str, Any]]:
        """The SmsReport JSON array for one message (phone, biz_id, out_id, …)."""
        now = dt.datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        return [{"phone_number": sms.phone, "send_time": sms.at.astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S"),
                 "report_time": now, "success": success, "err_code": err_code,
                 "err_msg": "用户接收成功" if success else "失败", "sms_size": "1", "biz_id": sms.biz_id,
                 "out_id": sms.out_id}]

    def uplink_body(self, phone: str, content: str, *, sequence_id: int) -> list[dict[str, Any]]:
        """The SmsUp JSON array for a citizen's reply."""
        return [{"phone_number": phone, "content": content, "sign_name": "示例城管", "dest_code": "1234",
                 "sequence_id": sequence_id,
                 "send_time": dt.datetime.now(BEIJING).strftime("%Y-%m-%d %H:%M:%S")}]
