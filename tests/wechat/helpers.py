"""Shared steps of the WeChat tests: a quick report, and moving its case through the workflow."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import select

from core.cases.models import DraftCase
from tests.wechat.conftest import Harness, User

DEPT = {"Authorization": "Bearer dept-token"}


def quick_report(user: User, text: str = "解放路88号门口垃圾堆了好几天没人清理") -> DraftCase:
    """Report a problem without photos and return the draft."""
    user.text("上报")
    user.text(text)
    user.text("跳过")
    user.text("解放路88号门口")
    reply = user.text("确认")
    assert reply and "提交成功" in reply, reply
    drafts = user.h.query(select(DraftCase).where(DraftCase.source_key.like(f"wechat:{user.openid}:%"))
                          .order_by(DraftCase.id.desc()))
    assert drafts[0].number in reply
    return drafts[0]


def accept(wx: Harness, draft: DraftCase, code: str = "06010") -> str:
    """立案 through the API and deliver to the built-in workflow; return the case number."""
    wx.login()
    response = wx.api.post(f"/api/drafts/{draft.id}/accept", json={"case_type_code": code})
    assert response.status_code in (200, 201), response.text
    wx.drain()
    number = wx.api.get(f"/api/drafts/{draft.id}").json()["case_number"]
    assert number
    return str(number)


def dept(wx: Harness, number: str, action: str, **body: Any) -> None:
    """A department acts on the case in the built-in workflow."""
    response = wx.client.post(f"/api/workflow/cases/{number}/{action}", json=body, headers=DEPT)
    assert response.status_code == 200, response.text


def close(wx: Harness, number: str) -> None:
    """Take a case from 立案 to 结案."""
    dept(wx, number, "dispatch", note="派遣", department="hwc")
    dept(wx, number, "handle")
    dept(wx, number, "feedback", note="已清理")
    dept(wx, number, "verify", passed=True, note="核查通过")


@contextmanager
def no_full_collection() -> Iterator[None]:
    """Keep a full GC pass of the test process out of a timed section.

    The suite's one process accumulates hundreds of apps; a full collection of that heap takes ~0.5 s
    (measured) and, landing inside a sub-second budget, times the test runner instead of the reply. Collect
    first, then freeze what survives so the collector has nothing old to walk until the section ends.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
