"""Bodies of the gateways' callbacks (validated: the callbacks are unsigned) and of the SMS API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

Phone = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=32)]
Text = Annotated[str, StringConstraints(max_length=2000)]


class AliyunReport(BaseModel):
    """One item of an Aliyun SmsReport push."""

    model_config = ConfigDict(extra="ignore")

    phone_number: Phone
    success: bool
    biz_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    out_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    err_code: Annotated[str, StringConstraints(max_length=64)] = ""
    err_msg: Annotated[str, StringConstraints(max_length=255)] | None = None
    report_time: Annotated[str, StringConstraints(max_length=32)] | None = None
    send_time: Annotated[str, StringConstraints(max_length=32)] | None = None
    sms_size: str | int | None = None


class AliyunUplink(BaseModel):
    """One item of an Aliyun SmsUp push (a citizen's reply)."""

    model_config = ConfigDict(extra="ignore")

    phone_number: Phone
    content: Text
    sequence_id: int | str
    send_time: Annotated[str, StringConstraints(max_length=32)] | None = None
    sign_name: Annotated[str, StringConstraints(max_length=64)] | None = None
    dest_code: Annotated[str, StringConstraints(max_length=32)] | None = None


class TencentStatus(BaseModel):
    """One item of a Tencent Cloud delivery-status callback."""

    model_config = ConfigDict(extra="ignore")

    mobile: Phone
    nationcode: Annotated[str, StringConstraints(max_length=8)] = "86"
    report_status: Annotated[str, StringConstraints(max_length=16)]
    sid: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    errmsg: Annotated[str, StringConstraints(max_length=64)] = ""
    description: Annotated[str, StringConstraints(max_length=255)] | None = None
    user_receive_time: Annotated[str, StringConstraints(max_length=32)] | None = None


class TencentReply(BaseModel):
    """A Tencent Cloud reply callback (a citizen's SMS)."""

    model_config = ConfigDict(extra="ignore")

    mobile: Phone
    nationcode: Annotated[str, StringConstraints(max_length=8)] = "86"
    text: Text
    time: int = Field(ge=0)
    sign: Annotated[str, StringConstraints(max_length=64)] | None = None
    extend: Annotated[str, StringConstraints(max_length=32)] | None = None


class SendOutcome(BaseModel):
    """What happened to an SMS (CLI and API output; the number is masked)."""

    key: str
    to: str
    status: str
    parts: int
    provider: str | None
    provider_message_id: str | None
    not_before: dt.datetime | None
    defer_reason: str | None
    error: str | None
