"""我的案件, 查询, 帮助, consultation answers, ratings with the second callback, points."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select

from core.bus import Event
from core.cases.models import Case, PointsEntry, Rating
from core.models import Message
from tests.wechat.conftest import Harness
from tests.wechat.helpers import accept, close, quick_report


def collect_events(wx: Harness) -> list[Event]:
    """Subscribe to live events inside the app's loop."""
    events: list[Event] = []

    async def start() -> None:
        async def run() -> None:
            async for event in wx.api.ctx.bus.subscribe():
                events.append(event)

        task = asyncio.create_task(run())
        wx.api.ctx.closers.append(lambda: _cancel(task))
        await asyncio.sleep(0)

    wx.run(start)
    return events


async def _cancel(task: Any) -> None:
    task.cancel()


def test_help_questions_and_fallbacks(wx: Harness) -> None:
    user = wx.user()
    assert "查询+编号" in (user.text("帮助") or "")
    answer = user.text("渣土车运输需要办什么手续")
    assert answer and answer.startswith("【") and "12319" in answer and "回复“上报”" in answer
    unknown = user.text("今天天气怎么样")
    assert unknown and unknown.startswith("抱歉，暂时没有找到相关答复") and "12319" in unknown
    assert "井盖坏了归谁管" in (user.click("FAQ") or "")
    assert "还没有通过本公众号上报" in (user.text("我的案件") or "")
    assert "0分" in (user.text("我的积分") or "")


def test_my_cases_query_and_points(wx: Harness) -> None:
    user = wx.user()
    other = wx.user()
    draft = quick_report(user)
    listing = user.text("我的案件")
    assert listing and draft.number in listing and "待受理" in listing
    assert f"上报编号：{draft.number}" in (user.text(f"查询{draft.number}") or "")
    # Someone else's number is not shown.
    assert "没有找到" in (other.text(f"查询{draft.number}") or "")

    number = accept(wx, draft)
    listing = user.text("我的案件") or ""
    assert number in listing and "立案" in listing
    detail = user.text(f"查询 {number}") or ""
    assert "类型：暴露垃圾" in detail and "立案" in detail and "预计办结" in detail
    points = user.text("我的积分") or ""
    assert "10分" in points and "有效上报" in points

    # A second report of the same problem is merged: reduced points for the later reporter.
    dup = quick_report(other, "解放路88号门口的垃圾还是没人清理")
    merged = wx.api.post(f"/api/drafts/{dup.id}/merge", json={"case_number": number})
    assert merged.status_code == 200, merged.text
    assert "已并入案件" in (other.text("我的案件") or "")
    assert "1分" in (other.text("我的积分") or "")
    assert "1分" in (other.text("我的积分") or "")  # settled once only
    entries = wx.query(select(PointsEntry.delta).where(PointsEntry.reason == "duplicate_report"))
    assert entries == [1]


def test_rating_after_closing_and_a_bad_rating_flags_a_second_callback(wx: Harness) -> None:
    events = collect_events(wx)
    user = wx.user()
    assert "没有待评价" in (user.text("评价") or "")
    first = quick_report(user)
    number = accept(wx, first)
    assert "尚未办结" in (user.text(f"评价{number} 4") or "")
    close(wx, number)
    wx.drain()
    prompt = user.click("RATE")
    assert prompt and number in prompt and "5 非常满意" in prompt
    thanks = user.text("5")
    assert thanks and "感谢您的评价" in thanks and "5分（非常满意）" in thanks
    assert "已经评价过了" in (user.text(f"评价{number} 2") or "")
    [rating] = wx.query(select(Rating))
    assert rating.score == 5 and rating.channel == "wechat"
    wx.drain()
    assert wx.query(select(Case.rating_score)) == [5]

    second = quick_report(user, "胜利街的井盖又松了，车压过去哐哐响")
    number2 = accept(wx, second, "01002")
    close(wx, number2)
    wx.drain()
    bad = user.text("1")
    assert bad and "再次回访" in bad and "1分（非常不满意）" in bad
    [flag] = wx.query(select(Message).where(Message.kind == "callback_request"))
    case2 = wx.query(select(Case).where(Case.number == number2))[0]
    assert flag.case_id == case2.id and "二次回访" in flag.body
    assert "已记录您的意见" in (user.text("井盖根本没修，只是盖上去了") or "")
    [comment] = wx.query(select(Message).where(Message.kind == "rating_comment"))
    assert comment.case_id == case2.id and "根本没修" in comment.body
    topics = [e.topic for e in events]
    assert "case.callback_requested" in topics and "case.rating_comment" in topics
    requested = next(e for e in events if e.topic == "case.callback_requested")
    assert requested.data["number"] == number2 and requested.data["score"] == 1
