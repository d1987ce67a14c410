"""Machine alarms: one draft per ongoing alarm with a counter, never a flood."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import select

from core.cases.models import DraftCase
from core.models import Channel
from core.open311 import service
from core.open311.models import AlarmIncident, ApiClient
from core.open311.schemas import Alarm
from core.open311.wiring import runtime_of
from tests.conftest import Api
from tests.open311.conftest import drive_to_close, make_key, query


def alarm(**extra: Any) -> dict[str, Any]:
    return {"source": "排水监测系统", "type": "waterlogging",
            "location": {"point_id": "P-102", "address": "人民路下穿通道", "lat": 30.5912, "lng": 114.3021},
            "value": 35, "unit": "cm", "level": "二级"} | extra


def test_hundred_repeats_make_one_draft_with_a_counter(api: Api) -> None:
    sensors = make_key(api, "排水监测", "alarm")
    statuses = []
    for i in range(100):
        response = api.client.post("/api/alarms", json=alarm(value=30 + i % 10), headers=sensors.headers)
        assert response.status_code in (200, 201), response.text
        statuses.append(response.json()["status"])
    assert statuses[0] == "created" and set(statuses[1:]) == {"updated"}
    last = response.json()
    assert last["count"] == 100

    (draft,) = query(api, select(DraftCase))
    assert draft.channel == Channel.ALARM and draft.number == last["draft_number"]
    assert draft.raw_text.startswith("【监测告警】排水监测系统：道路积水")
    assert "累计 100 次" in draft.raw_text and "地点：人民路下穿通道（监测点 P-102）" in draft.raw_text
    assert "最新告警值：39cm" in draft.raw_text
    assert draft.suggested_type_code == "01004"  # waterlogging → 雨水箅子异常 from the alarm table
    (incident,) = query(api, select(AlarmIncident))
    assert incident.count == 100 and incident.last_value == "39"
    shown = api.client.get(f"/api/alarms/{incident.id}", headers=sensors.headers).json()
    assert shown["count"] == 100 and shown["draft_number"] == draft.number and shown["status_label"] == "待受理"

    elsewhere = api.client.post("/api/alarms", json=alarm(location={"point_id": "P-205", "address": "中山路隧道"}),
                                headers=sensors.headers)
    assert elsewhere.status_code == 201 and elsewhere.json()["draft_number"] != draft.number
    assert len(query(api, select(DraftCase))) == 2


def test_window_resolution_closure_and_duplicates(api: Api) -> None:
    sensors = make_key(api, "供热监测", "alarm")
    runtime = runtime_of(api.ctx)
    start = dt.datetime(2026, 11, 22, 2, 0, tzinfo=dt.UTC)
    runtime.clock = lambda: start

    def send(**extra: Any) -> dict[str, Any]:
        response = api.client.post("/api/alarms", json=alarm(type="供热泄漏", **extra), headers=sensors.headers)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    first = send(alarm_id="evt-1")
    assert send(alarm_id="evt-1")["status"] == "duplicate"  # the same event delivered twice counts once
    assert send(alarm_id="evt-2")["count"] == 2
    # Silent for longer than the window (120 min): the next alarm is a new incident.
    runtime.clock = lambda: start + dt.timedelta(hours=3)
    later = send()
    assert later["status"] == "created" and later["draft_number"] != first["draft_number"]
    assert send(state="resolved")["status"] == "resolved"
    again = send()
    assert again["status"] == "created"  # after 恢复 a new alarm is a new problem
    assert send(state="resolved")["status"] == "resolved"
    assert send(state="resolved")["status"] == "ignored"

    # Once the case of an incident is closed, a repeat opens a new draft.
    (draft,) = query(api, select(DraftCase).where(DraftCase.number == again["draft_number"]))
    assert "已于" in draft.raw_text and "恢复" in draft.raw_text
    fresh = send(location={"point_id": "H-9", "address": "供热管网3号井"})
    fresh_draft = query(api, select(DraftCase).where(DraftCase.number == fresh["draft_number"]))[0]
    assert fresh_draft.suggested_type_code == "01061"
    drive_to_close(api, fresh_draft.id, case_type="01061")
    after = send(location={"point_id": "H-9", "address": "供热管网3号井"})
    assert after["status"] == "created" and after["draft_number"] != fresh["draft_number"]

    bad = api.client.post("/api/alarms", json={"source": "x", "type": "y", "location": {}}, headers=sensors.headers)
    assert bad.status_code == 422
    app_key = make_key(api, "app", "open311")
    assert api.client.post("/api/alarms", json=alarm(), headers=app_key.headers).status_code == 403


def test_concurrent_first_alarms_open_one_incident(api: Api) -> None:
    if api.ctx.settings.is_sqlite:
        pytest.skip("SQLite has one writer: concurrent first alarms are a PostgreSQL concern")
    make_key(api, "视频分析", "alarm")

    async def burst() -> list[str]:
        ctx = api.ctx
        async with ctx.sessions() as session:
            client = await session.scalar(select(ApiClient).where(ApiClient.name == "视频分析"))
        assert client is not None
        now = dt.datetime.now(dt.UTC)
        body = Alarm.model_validate(alarm(type="street_vendor", source="视频AI"))

        async def one() -> str:
            async with ctx.uow() as session:
                outcome = await service.receive_alarm(
                    session=session, kb=ctx.kb, client=client, alarm=body, now=now,
                    window=dt.timedelta(minutes=120), suggestion=service.Suggestion(code="09006"), ip=None)
                return outcome.status

        return list(await asyncio.gather(*(one() for _ in range(20))))

    statuses = api.run(burst)
    assert sorted(statuses).count("created") == 1 and statuses.count("updated") == 19
    (incident,) = query(api, select(AlarmIncident))
    assert incident.count == 20
    assert len(query(api, select(DraftCase))) == 1
