"""Place phrases and districts from free text: crossings, 小区+楼号, landmark+方位, gazetteer resolution."""

from __future__ import annotations

import pytest

from classifier.address import Gazetteer, extract_address


@pytest.mark.parametrize(("text", "span", "district"), [
    ("市民来电反映：解放路与人民路交叉口东北角一污水井盖破损塌陷", "解放路与人民路交叉口东北角", "中心区"),
    ("人民路和文化路路口有人摆摊", "人民路和文化路路口", "中心区"),
    # 解放大道 crosses 中心区 and 东城区; 东风路 is only in 东城区, so the crossing is in 东城区.
    ("解放大道与东风路交叉口红绿灯坏了", "解放大道与东风路交叉口", "东城区"),
    ("珞喻路与鲁磨路交叉口井盖丢了", "珞喻路与鲁磨路交叉口", None),
])
def test_crossings(text: str, span: str, district: str | None) -> None:
    found = extract_address(text)
    assert found is not None and found.text == span and found.district == district


@pytest.mark.parametrize(("text", "span", "district"), [
    ("幸福小区3栋楼下垃圾桶满了", "幸福小区3栋", "中心区"),
    ("鼓楼新村5号楼2单元门口路灯不亮", "鼓楼新村5号楼2单元", "中心区"),
    ("万科城12栋1单元楼道里堆满杂物", "万科城12栋1单元", "高新区"),
    ("我住的锦华苑七栋楼下有人烧垃圾", "锦华苑七栋", None),
])
def test_compound_and_building(text: str, span: str, district: str | None) -> None:
    found = extract_address(text)
    assert found is not None and found.text == span and found.district == district


def test_landmark_with_direction_has_coordinates() -> None:
    found = extract_address("示例市第一中学东门对面有个井盖没了")
    assert found is not None and found.text == "示例市第一中学东门"
    assert (found.lat, found.lng, found.district_code) == (30.624, 114.288, "990102")
    unknown = extract_address("光谷广场附近有人乱摆摊")
    assert unknown is not None and unknown.text == "光谷广场附近" and unknown.lat is None


def test_longest_match_wins() -> None:
    # 鼓楼 (landmark) is a prefix of 鼓楼新村 (compound): the longer name wins.
    found = extract_address("鼓楼新村门口有人乱贴小广告")
    assert found is not None and found.text.startswith("鼓楼新村") and found.lat is None
    landmark = extract_address("鼓楼附近有人乱贴小广告")
    assert landmark is not None and landmark.text == "鼓楼附近" and landmark.lat == 30.631


def test_district_prefix_and_road_ambiguity() -> None:
    found = extract_address("江北区柳河街道柳河路上有个大坑")
    assert found is not None and found.text == "江北区柳河街道柳河路" and found.district == "江北区"
    ambiguous = extract_address("解放大道上的路灯不亮")
    assert ambiguous is not None and ambiguous.text == "解放大道" and ambiguous.district is None


@pytest.mark.parametrize("text", ["路灯坏了", "马路上有个坑", "过马路的时候看到井盖没了", "我家小区门口垃圾没人收",
                                  "", "😀", "hello"])
def test_no_place(text: str) -> None:
    assert extract_address(text) is None


def test_gazetteer_lookup() -> None:
    gaz = Gazetteer.load()
    assert gaz.district_code("东城区") == "990104" and gaz.district_code("990171") == "990171"
    assert gaz.district_code("高新") == "990171" and gaz.district_code("火星区") is None
    assert "雨水箅子" not in gaz.all_names() and "人民广场地铁站" in gaz.all_names()
    roads = [p for p in gaz.places["解放大道"] if p.kind == "road"]
    assert roads and set(roads[0].districts) == {"990102", "990104"}


def test_long_input_is_bounded() -> None:
    assert extract_address("人民路" + "啊" * 100_000) is not None
