"""Bodies of the 12345 transfer, alarm, subscription and key-administration endpoints (Open311 is form-shaped)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from core.cases.schemas import MAX_TEXT
from core.open311.client import UnsafeUrl, check_url_syntax
from core.open311.models import DeliveryStatus, Scope
from kb.service import LOCAL_TZ

Url = Annotated[str, StringConstraints(strip_whitespace=True, min_length=8, max_length=1024)]
Short = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)]


def _local(value: dt.datetime | None) -> dt.datetime | None:
    """Times without a zone are 北京时间 (what Chinese platforms send); store them as aware UTC."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=LOCAL_TZ)
    return value.astimezone(dt.UTC)


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_url_syntax(value)
    except UnsafeUrl as err:
        raise ValueError(str(err)) from err


class Caller(BaseModel):
    """The citizen who called 12345."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=32)] | None = None


class Attachment(BaseModel):
    """A photo or document the 12345 platform attaches (by URL)."""

    model_config = ConfigDict(extra="forbid")

    url: Url
    kind: Annotated[str, StringConstraints(pattern=r"^(photo|voice|video|recording|file)$")] = "photo"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value) or value


class TransferOrder(BaseModel):
    """A 12345 work order transferred to the centre (市长热线转办)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "order_id": "GD202611220153",
        "caller": {"name": "李女士", "phone": "13912345678"},
        "content": "来电反映：解放路与中山路交叉口东南角人行道上污水井盖缺失，已有行人险些踩空，要求尽快处理。",
        "deadline": "2026-11-24T18:00:00+08:00",
        "category": "城市管理-市政设施-井盖",
        "callback_url": "https://12345.example.gov.cn/api/orders/result",
        "address": "解放路与中山路交叉口东南角",
        "district": "中心区",
        "urgent": True,
    }]})

    order_id: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    caller: Caller | None = None
    content: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT)]
    deadline: dt.datetime | None = Field(default=None, description="12345 规定的办结时限（无时区按北京时间）")
    category: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None = Field(
        default=None, description="12345 的诉求分类；可直接给本中心的 5 位事项代码")
    callback_url: Url = Field(description="结案（或退回）时本中心 POST 办理结果的地址，签名见文档")
    address: Short | None = None
    district: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lng: Annotated[float, Field(ge=-180, le=180)] | None = None
    urgent: bool = False
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    received_at: dt.datetime | None = Field(default=None, description="12345 受理来电的时间")

    @field_validator("deadline", "received_at")
    @classmethod
    def _zone(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _local(value)

    @field_validator("callback_url")
    @classmethod
    def _callback(cls, value: str) -> str:
        return _http_url(value) or value


class TransferAccepted(BaseModel):
    """What the 12345 platform gets back for an order (the same for every repeat of it)."""

    order_id: str
    draft_number: str
    duplicate: bool
    case_number: str | None = None
    status: str
    status_label: str


class AlarmLocation(BaseModel):
    """Where the monitoring point is: its id, coordinates and/or an address."""

    model_config = ConfigDict(extra="forbid")

    point_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None
    lat: Annotated[float, Field(ge=-90, le=90)] | None = None
    lng: Annotated[float, Field(ge=-180, le=180)] | None = None
    address: Short | None = None
    district: Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> AlarmLocation:
        if not self.point_id and not self.address and (self.lat is None or self.lng is None):
            raise ValueError("location needs point_id, address, or both lat and lng")
        return self


class Alarm(BaseModel):
    """A machine alarm: compact, sent on every detection; repeats of one ongoing alarm update one draft."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "source": "排水监测系统", "type": "waterlogging",
        "location": {"point_id": "P-102", "address": "人民路下穿通道", "lat": 30.5912, "lng": 114.3021},
        "value": 35, "unit": "cm", "time": "2026-11-22T10:15:00+08:00", "level": "二级",
    }]})

    source: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    type: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    location: AlarmLocation
    value: float | Annotated[str, StringConstraints(max_length=64)] | None = None
    unit: Annotated[str, StringConstraints(strip_whitespace=True, max_length=16)] | None = None
    time: dt.datetime | None = Field(default=None, description="检测时间（无时区按北京时间）；缺省为收到时间")
    level: Annotated[str, StringConstraints(strip_whitespace=True, max_length=16)] | None = None
    state: Literal["firing", "resolved"] = Field(default="firing", description="resolved = 告警已恢复")
    alarm_id: Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None = Field(
        default=None, description="监测系统自己的告警事件编号；重复投递同一编号只计一次")
    text: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None
    case_type_code: Annotated[str, StringConstraints(pattern=r"^\d{5}$")] | None = None

    @field_validator("time")
    @classmethod
    def _zone(cls, value: dt.datetime | None) -> dt.datetime | None:
        return _local(value)


class AlarmResult(BaseModel):
    """The incident an alarm was counted into."""

    incident_id: int | None
    status: Literal["created", "updated", "resolved", "duplicate", "ignored"]
    draft_number: str | None = None
    case_number: str | None = None
    count: int = 0


class Subscription(BaseModel):
    """Where a client wants status changes of its requests POSTed."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"webhook_url": "https://app.example.com/hooks/intake"}]})

    webhook_url: Url

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value) or value


class ClientCreate(BaseModel):
    """An administrator creates an API key for a partner system."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=2, max_length=64)]
    scopes: list[Scope] = Field(default_factory=lambda: [Scope.OPEN311], min_length=1)
    contact: Short | None = None
    rate_per_minute: Annotated[int, Field(ge=1, le=100_000)] | None = None
    quota_per_day: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    webhook_url: Url | None = None

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _http_url(value)


class ClientRead(BaseModel):
    """An API client without its secrets."""

    id: int
    name: str
    contact: str | None
    key_prefix: str
    scopes: list[str]
    rate_per_minute: int
    quota_per_day: int
    active: bool
    webhook_url: str | None
    created_at: dt.datetime
    last_used_at: dt.datetime | None


class ClientCreated(ClientRead):
    """A new client with its API key and signing secret, shown this once."""

    api_key: str
    signing_secret: str


class DeliveryRead(BaseModel):
    """One line of the webhook delivery log."""

    id: int
    event: str
    url: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int | None
    last_error: str | None
    service_request_id: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    payload: dict[str, Any] | None = None
