"""Reading citizens' replies: ratings (1→5, 2→3, 3→1), opt-outs, and free text that reports a problem."""

from __future__ import annotations

import pytest

from sms.replies import FreeText, OptOut, RatingReply, classify, looks_like_report


@pytest.mark.parametrize(("text", "choice", "score"), [
    ("1", "1", 5), ("2", "2", 3), ("3", "3", 1), (" 1 ", "1", 5), ("１", "1", 5), ("1。", "1", 5),
    ("满意", "1", 5), ("基本满意", "2", 3), ("不满意", "3", 1), ("非常满意！", "1", 5), ("1满意", "1", 5),
    ("3不满意", "3", 1),
])
def test_ratings(text: str, choice: str, score: int) -> None:
    reply = classify(text)
    assert isinstance(reply, RatingReply)
    assert (reply.choice, reply.score, reply.comment) == (choice, score, None)


def test_rating_with_a_comment() -> None:
    reply = classify("不满意，井盖还是松的")
    assert isinstance(reply, RatingReply) and reply.score == 1 and reply.comment == "井盖还是松的"


@pytest.mark.parametrize("text", ["1号楼门口垃圾没人清", "2楼漏水", "满意度调查是什么", "1不满意", "12", "4", "谢谢"])
def test_not_ratings(text: str) -> None:
    assert isinstance(classify(text), FreeText)


@pytest.mark.parametrize("text", ["T", "t", "TD", "td。", "退订", " 退订短信 ", "ＴＤ"])
def test_opt_out(text: str) -> None:
    assert isinstance(classify(text), OptOut)


def test_words_containing_t_are_not_opt_outs() -> None:
    assert isinstance(classify("Thanks"), FreeText)
    assert isinstance(classify("退订单"), FreeText)


@pytest.mark.parametrize(("text", "expected"), [
    ("谢谢", False), ("好的，收到，谢谢你们", False), ("你好在吗", False),
    ("解放路口的路灯坏了好几天了，晚上很黑", True), ("小区门口垃圾堆积很久了", True),
    ("我想问一下上次那个事情后来怎么样了呀，一直没有人给我回个电话，麻烦告诉我进展", True),
])
def test_problem_reports(text: str, expected: bool) -> None:
    assert looks_like_report(text) is expected


def test_case_type_names_count_as_problems() -> None:
    assert looks_like_report("门前有个暴露垃圾点", case_type_names=("暴露垃圾",))
