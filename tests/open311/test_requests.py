"""Open311 GeoReport v2: discovery, services, POST requests with every standard error, GET requests and updates."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET

from sqlalchemy import select

from core.cases.models import DraftCase
from core.models import AuditEntry, Channel
from core.open311.models import ServiceRequest
from tests.conftest import Api
from tests.open311.conftest import drive_to_close, make_key, query

MANHOLE = {
    "service_code": "01002", "lat": "30.5912", "long": "114.3021", "address_string": "人民路与解放路交叉口东北角",
    "description": "人行道上的污水井盖破了一个大洞，晚上路过很危险", "attribute[injured]": "no",
    "attribute[cover_state]": "broken", "phone": "138 1234 5678", "last_name": "王", "first_name": "先生",
}
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 2000


def post(api: Api, key: str | None, data: dict[str, Any] | None = None, *, fmt: str = "json", **kwargs: Any) -> Any:
    body = dict(data or {})
    if key:
        body["api_key"] = key
    return api.client.post(f"/open311/v2/requests.{fmt}", data=body, **kwargs)


def drafts(api: Api) -> list[DraftCase]:
    return query(api, select(DraftCase).order_by(DraftCase.id))


def test_discovery_and_services_in_json_and_xml(api: Api) -> None:
    discovery = api.get("/open311/v2/discovery.json").json()
    assert discovery["endpoints"][0]["url"].endswith("/open311/v2")
    assert "text/xml" in discovery["endpoints"][0]["formats"]

    services = api.get("/open311/v2/services.json").json()
    assert len(services) == 250
    manhole = next(s for s in services if s["service_code"] == "01002")
    assert manhole == {"service_code": "01002", "service_name": "污水井盖异常",
                       "description": "市政公用设施类（部件问题）：污水井盖异常", "metadata": True, "type": "realtime",
                       "keywords": "市政公用设施类,部件问题", "group": "市政公用设施类"}
    assert {s["group"] for s in services} >= {"市容环境类", "街面秩序类", "施工管理类"}
    garbage = next(s for s in services if s["service_code"] == "06010")
    assert garbage["metadata"] is False

    definition = api.get("/open311/v2/services/01002.json").json()
    injured = definition["attributes"][0]
    assert injured["code"] == "injured" and injured["description"] == "是否有人受伤" and injured["required"] is True
    assert {v["key"]: v["name"] for v in injured["values"]} == {"yes": "是", "no": "否"}
    noise = api.get("/open311/v2/services/06028.json").json()
    assert noise["attributes"][0]["description"] == "发生时段"
    assert api.get("/open311/v2/services/06010.json").json()["attributes"] == []

    missing = api.get("/open311/v2/services/99999.json")
    assert missing.status_code == 404
    assert missing.json() == [{"code": 404, "description": "service_code 99999 不存在"}]

    xml = api.get("/open311/v2/services.xml")
    assert xml.headers["content-type"].startswith("text/xml")
    root = ET.fromstring(xml.content)
    assert root.tag == "services" and len(root.findall("service")) == 250
    assert root.find("service/group") is not None
    bad_format = api.get("/open311/v2/services.csv")
    assert bad_format.status_code == 404 and bad_format.json()[0]["code"] == 404


def test_valid_request_becomes_a_draft(api: Api) -> None:
    key = make_key(api, "城市随手拍")
    response = post(api, key.key, MANHOLE)
    assert response.status_code == 201, response.text
    body = response.json()
    assert len(body) == 1 and set(body[0]) == {"service_request_id", "service_notice", "account_id"}
    request_id = body[0]["service_request_id"]
    assert request_id in body[0]["service_notice"]
    assert response.headers["X-RateLimit-Limit"] == "1000"

    (draft,) = drafts(api)
    assert draft.number == request_id and draft.channel == Channel.API
    assert draft.raw_text.startswith(MANHOLE["description"])
    assert "是否有人受伤：否" in draft.raw_text and "井盖状况：破损" in draft.raw_text
    assert "城市随手拍" in draft.raw_text
    assert (draft.lat, draft.lng, draft.address) == (30.5912, 114.3021, MANHOLE["address_string"])
    assert draft.reporter_name == "王先生"
    # No classifier wired: the reporter's own type is the suggestion, routed to its department.
    assert draft.suggested_type_code == "01002" and draft.suggestion_confidence is None
    inbox = api.get(f"/api/drafts/{draft.id}").json()
    assert inbox["reporter_phone_masked"] == "138****5678"

    # JSON bodies work the same way.
    as_json = api.client.post("/open311/v2/requests.json", headers=key.headers, json={
        "service_code": "06028", "address_string": "幸福小区3栋楼下", "description": "每晚十点后广场舞音响很吵",
        "attribute": {"period": "night", "noise_source": "square_dance"}})
    assert as_json.status_code == 201, as_json.text
    noisy = drafts(api)[-1]
    assert "发生时段：夜间（22时至次日6时）" in noisy.raw_text and "噪声来源：广场舞" in noisy.raw_text

    audit = query(api, select(AuditEntry).where(AuditEntry.action == "open311.request.create"))
    assert [a.actor for a in audit] == ["城市随手拍", "城市随手拍"]
    assert "13812345678" not in json.dumps([a.details for a in audit])


def test_standard_errors(api: Api) -> None:
    key = make_key(api, "app").key

    def error(data: dict[str, Any], status: int = 400, **kwargs: Any) -> list[str]:
        response = post(api, key, data, **kwargs)
        assert response.status_code == status, response.text
        body = response.json()
        assert all(set(e) == {"code", "description"} and e["code"] == status for e in body)
        return [e["description"] for e in body]

    missing_code = {k: v for k, v in MANHOLE.items() if k != "service_code"}
    assert error(missing_code) == ["缺少必填参数 service_code（事项代码，见 GET services）"]
    assert error({**MANHOLE, "service_code": "99999"})[0].startswith("service_code 99999 不存在")
    assert error({**MANHOLE, "lat": "200"})[0].startswith("坐标无效")
    assert error({**MANHOLE, "lat": "north"}) == ["lat 必须是数字（收到 north）"]
    only_lat = {k: v for k, v in MANHOLE.items() if k not in ("long", "address_string")}
    assert error(only_lat) == ["lat 和 long 必须同时提供"]
    nowhere = {k: v for k, v in MANHOLE.items() if k not in ("lat", "long", "address_string")}
    assert error(nowhere) == ["请提供位置：lat 和 long，或 address_string（或 address_id）"]
    assert error({**MANHOLE, "description": "坏" * 4001}) == ["description 不能超过 4000 个字符（收到 4001 个）"]
    no_answer = {k: v for k, v in MANHOLE.items() if k != "attribute[injured]"}
    assert error(no_answer) == ["缺少必填属性 attribute[injured]（是否有人受伤）"]
    assert error({**MANHOLE, "attribute[injured]": "maybe"})[0].startswith("属性 injured 的取值 maybe 不在可选范围内")
    assert error({**MANHOLE, "phone": "12345"}) == ["phone 不是有效的电话号码"]
    # Several problems are reported together.
    assert len(error({"lat": "x", "description": "坏" * 4001})) == 3

    assert error(MANHOLE, 403, headers={"X-Api-Key": "o311_wrong"}) == ["api_key 无效、已停用或缺失"]
    no_key = api.client.post("/open311/v2/requests.json", data=MANHOLE)
    assert no_key.status_code == 403 and no_key.json() == [{"code": 403, "description": "api_key 无效、已停用或缺失"}]
    as_xml = api.client.post("/open311/v2/requests.xml", data=MANHOLE)
    root = ET.fromstring(as_xml.content)
    assert as_xml.status_code == 403 and root.tag == "errors" and root.findtext("error/code") == "403"

    exactly = post(api, key, {**MANHOLE, "description": "坏" * 4000})
    assert exactly.status_code == 201
    (draft,) = drafts(api)  # nothing refused was stored
    assert len(draft.raw_text) <= 4000 and draft.raw_text.endswith("井盖状况：破损")
    stored = query(api, select(ServiceRequest))
    assert len(stored[0].description) == 4000  # the full text is kept with the request
    rejected = query(api, select(AuditEntry).where(AuditEntry.action == "open311.request.rejected"))
    assert len(rejected) == 11 and all(a.actor == "app" for a in rejected)


def test_photo_upload_limits_and_serving(api: Api, tmp_path: Any) -> None:
    key = make_key(api, "app").key
    ok = post(api, key, MANHOLE, files=[("media", ("hole.jpg", JPEG, "image/jpeg"))])
    assert ok.status_code == 201, ok.text
    request_id = ok.json()[0]["service_request_id"]
    shown = api.get(f"/open311/v2/requests/{request_id}.json", headers={"X-Api-Key": key}).json()[0]
    assert shown["media_url"].startswith("http://testserver/open311/v2/media/")
    photo = api.get(shown["media_url"].removeprefix("http://testserver"))
    assert photo.status_code == 200 and photo.content == JPEG and photo.headers["content-type"] == "image/jpeg"

    big = post(api, key, MANHOLE, files=[("media", ("big.jpg", JPEG + b"\x00" * 200_000, "image/jpeg"))])
    assert big.status_code == 413
    assert big.json() == [{"code": 413, "description": "照片 big.jpg 超过 0.2 MB 的上限"}]
    fake = post(api, key, MANHOLE, files=[("media", ("evil.jpg", b"<?php echo 1;", "image/jpeg"))])
    assert fake.status_code == 400 and "格式不支持" in fake.json()[0]["description"]
    many = post(api, key, MANHOLE, files=[("media", (f"{i}.jpg", JPEG, "image/jpeg")) for i in range(4)])
    assert many.status_code == 400 and many.json()[0]["description"] == "每个请求最多上传 3 张照片"
    # Only the accepted request's photo is on disk.
    media_dir = api.ctx.settings.media_dir
    assert media_dir is not None
    assert len(list((media_dir / "open311").rglob("*.jpg"))) == 1
    assert api.get("/open311/v2/media/../../etc/passwd").status_code == 404


def test_idempotency_key_gives_one_draft(api: Api) -> None:
    key = make_key(api, "app")
    headers = {**key.headers, "Idempotency-Key": "app-report-42"}
    first = api.client.post("/open311/v2/requests.json", data=MANHOLE, headers=headers)
    again = api.client.post("/open311/v2/requests.json", data=MANHOLE, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()[0]["service_request_id"] == again.json()[0]["service_request_id"]
    assert len(drafts(api)) == 1


class Suggesting:
    """An in-process classifier with the contract of `intake classify` (top-k with scores, department)."""

    def __init__(self, codes: list[tuple[str, float]], department: str | None = "sanitation") -> None:
        self.codes, self.department = codes, department
        self.texts: list[str] = []

    def suggest(self, text: str, *, district: str | None = None) -> dict[str, Any]:
        self.texts.append(text)
        return {"suggestions": [{"code": c, "name": "", "score": s} for c, s in self.codes],
                "department": self.department, "needs_review": False}


class Broken:
    def suggest(self, text: str, *, district: str | None = None) -> dict[str, Any]:
        raise RuntimeError("model file missing")


def test_drafts_carry_the_classifier_suggestion(api: Api) -> None:
    key = make_key(api, "app").key
    classifier = Suggesting([("06010", 0.5), ("06042", 0.4), ("06011", 0.05)])
    api.ctx.classifier = classifier
    garbage = {"service_code": "06042", "address_string": "解放路菜场门口", "description": "门口堆了好多垃圾没人清"}
    assert post(api, key, garbage).status_code == 201
    draft = drafts(api)[-1]
    # The reporter's 06042 is close behind the classifier's best: their choice stands, with the classifier's score.
    assert (draft.suggested_type_code, draft.suggestion_confidence) == ("06042", 0.4)
    assert classifier.texts == ["门口堆了好多垃圾没人清"]

    classifier.codes = [("06010", 0.9), ("06042", 0.05), ("06012", 0.02)]
    assert post(api, key, garbage).status_code == 201  # 06042 far behind: the classifier's best wins
    assert (drafts(api)[-1].suggested_type_code, drafts(api)[-1].suggestion_confidence) == ("06010", 0.9)
    wrong = {**garbage, "service_code": "01037", "attribute[light_state]": "off"}
    assert post(api, key, wrong).status_code == 201
    draft = drafts(api)[-1]
    assert (draft.suggested_type_code, draft.suggested_department, draft.suggestion_confidence) == (
        "06010", "sanitation", 0.9)

    api.ctx.classifier = Broken()
    assert post(api, key, garbage).status_code == 201  # a broken classifier never loses a report
    assert drafts(api)[-1].suggested_type_code == "06042"


def test_the_wired_classifier_without_a_model_never_blocks_intake(api: Api) -> None:
    # In tests the app's classifier has no model (it is never trained there): it refuses, intake goes on.
    assert api.ctx.classifier is not None
    key = make_key(api, "app").key
    assert post(api, key, MANHOLE).status_code == 201
    assert drafts(api)[-1].suggested_type_code == "01002"


def test_the_shipped_classifier_suggests_for_api_drafts(api: Api, real_classifier: Any) -> None:
    api.ctx.classifier = real_classifier
    key = make_key(api, "app").key
    report = {"service_code": "01037", "attribute[light_state]": "off", "address_string": "解放路菜场门口",
              "description": "菜场门口路边堆了一大堆生活垃圾，好几天没人清运，臭气熏天"}
    assert post(api, key, report).status_code == 201
    draft = drafts(api)[-1]
    # The reporter picked 路灯异常; the text is about garbage and the classifier says so.
    assert draft.suggested_type_code is not None and draft.suggested_type_code.startswith("06")
    assert draft.suggestion_confidence is not None and 0 < draft.suggestion_confidence <= 1
    assert draft.suggested_department


def test_classifier_results_are_read_in_every_shape(api: Api) -> None:
    from core.open311.service import read_classifier_output

    kb = api.ctx.kb
    as_dict = {"suggestions": [{"code": "06010", "score": 0.7}, {"code": "99999", "score": 0.2}], "department": "d1"}
    assert read_classifier_output(as_dict, kb).ranked == (("06010", 0.7),)  # type: ignore[union-attr]
    assert read_classifier_output([{"code": "06028", "score": 1}], kb).ranked == (("06028", 1.0),)  # type: ignore[union-attr]
    assert read_classifier_output({"suggestions": []}, kb) is None
    assert read_classifier_output(None, kb) is None
    schemas = __import__("pytest").importorskip("classifier.schemas")
    result = schemas.ClassifyResult(suggestions=[schemas.Suggestion(code="01002", name="污水井盖异常", score=0.66)],
                                    department="drainage")
    read = read_classifier_output(result, kb)
    assert read is not None and read.ranked == (("01002", 0.66),) and read.department == "drainage"


def test_get_requests_status_and_every_step(api: Api) -> None:
    key = make_key(api, "app")
    other = make_key(api, "other app")
    viewer = make_key(api, "open data", "read_all")
    request_id = post(api, key.key, MANHOLE).json()[0]["service_request_id"]
    post(api, key.key, {**MANHOLE, "description": "另一处井盖也坏了"})
    (draft, second) = drafts(api)

    listed = api.get("/open311/v2/requests.json", headers=key.headers).json()
    assert [r["service_request_id"] for r in listed] == [second.number, request_id]
    assert listed[1]["status"] == "open" and listed[1]["status_notes"] == "已收到，等待受理员审核"
    assert "phone" not in listed[1] and "13812345678" not in json.dumps(listed)
    assert api.get("/open311/v2/requests.json", headers=other.headers).json() == []
    assert len(api.get("/open311/v2/requests.json", headers=viewer.headers).json()) == 2
    assert api.get(f"/open311/v2/requests/{request_id}.json", headers=other.headers).status_code == 404

    number = drive_to_close(api, draft.id)
    by_case = api.get(f"/open311/v2/requests/{number}.json", headers=key.headers).json()[0]
    assert by_case["service_request_id"] == request_id and by_case["case_number"] == number
    assert by_case["status"] == "closed" and by_case["step_label"] == "结案"
    assert by_case["agency_responsible"] and by_case["expected_datetime"].endswith("+08:00")

    steps = api.get(f"/open311/v2/requests/{request_id}/updates.json", headers=key.headers).json()
    assert [s["step_label"] for s in steps] == ["已接收", "立案", "派遣", "处置", "反馈", "核查", "结案"]
    assert [s["status"] for s in steps][-1] == "closed" and steps[0]["status"] == "open"
    assert steps[1]["description"] == f"已立案，案件编号 {number}"
    assert steps[2]["description"].startswith("已派遣至") and steps[2]["description"].endswith("派遣至排水公司")
    assert steps[4]["media_url"] == "http://testserver/media/after.jpg" and "已更换井盖" in steps[4]["description"]

    closed = api.get("/open311/v2/requests.json?status=closed", headers=key.headers).json()
    opened = api.get("/open311/v2/requests.json?status=open", headers=key.headers).json()
    assert [r["service_request_id"] for r in closed] == [request_id]
    assert [r["service_request_id"] for r in opened] == [second.number]
    assert api.get("/open311/v2/requests.json?service_code=06010", headers=key.headers).json() == []
    both = api.get(f"/open311/v2/requests.json?service_request_id={request_id},{second.number}&status=closed",
                   headers=key.headers).json()
    assert len(both) == 2  # ids override every other filter
    bad = api.get("/open311/v2/requests.json?start_date=yesterday", headers=key.headers)
    assert bad.status_code == 400 and bad.json()[0]["description"].startswith("start_date 不是 ISO 8601")
    wide = api.get("/open311/v2/requests.json?start_date=2026-01-01T00:00:00Z&end_date=2026-06-01T00:00:00Z",
                   headers=key.headers)
    assert wide.status_code == 400

    rejected = api.post(f"/api/drafts/{second.id}/reject", json={"reason": "不属于城市管理范围"})
    assert rejected.status_code == 200
    shown = api.get(f"/open311/v2/requests/{second.number}.xml", headers=key.headers)
    root = ET.fromstring(shown.content)
    assert root.tag == "service_requests" and root.findtext("request/status") == "closed"
    assert root.findtext("request/status_notes") == "不予立案：不属于城市管理范围"
    polled = api.get("/open311/v2/servicerequestupdates.json", headers=key.headers).json()
    assert {u["step_label"] for u in polled} >= {"已接收", "结案", "不予立案"}
    reads = query(api, select(AuditEntry.action).where(AuditEntry.actor == "app"))
    assert "open311.requests.list" in reads and "open311.updates.read" in reads


def test_openapi_documents_every_door_with_examples(api: Api) -> None:
    spec = api.get("/openapi.json").json()
    post_request = spec["paths"]["/open311/v2/requests.{fmt}"]["post"]
    content = post_request["requestBody"]["content"]
    assert set(content) == {"application/x-www-form-urlencoded", "multipart/form-data", "application/json"}
    assert content["application/x-www-form-urlencoded"]["example"]["service_code"] == "01002"
    assert post_request["responses"]["400"]["content"]["application/json"]["example"][0]["code"] == 400
    schemas = spec["components"]["schemas"]
    assert schemas["TransferOrder"]["examples"][0]["order_id"] and schemas["Alarm"]["examples"][0]["type"]
    for path in ("/api/transfer/12345/orders", "/api/alarms", "/open311/v2/requests/{request_id}/updates.{fmt}",
                 "/open311/v2/subscription.json", "/api/open311/deliveries"):
        assert path in spec["paths"]
