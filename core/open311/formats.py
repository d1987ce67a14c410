"""Open311 responses in JSON and XML, and the standard error list `[{"code": 400, "description": "..."}]`."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from xml.etree import ElementTree as ET

from fastapi.responses import Response

from kb.service import LOCAL_TZ

FORMATS = {"json": "application/json; charset=utf-8", "xml": "text/xml; charset=utf-8"}
# XML children of a list take the singular name the GeoReport v2 examples use.
SINGULAR = {
    "services": "service", "service_requests": "request", "service_request_updates": "request_update",
    "endpoints": "endpoint", "formats": "format", "attributes": "attribute", "values": "value",
    "media_urls": "media_url", "attachments": "attachment", "errors": "error", "deliveries": "delivery",
}


class Open311Error(Exception):
    """A refusal in the Open311 shape: an HTTP status and one or more Chinese descriptions."""

    def __init__(self, status: int, descriptions: str | Sequence[str], *, headers: Mapping[str, str] | None = None,
                 error_id: str = "bad-request") -> None:
        """Build the error; `error_id` is our stable id, logged and audited."""
        self.status = status
        self.descriptions = [descriptions] if isinstance(descriptions, str) else list(descriptions)
        self.headers = dict(headers or {})
        self.error_id = error_id
        super().__init__("; ".join(self.descriptions))

    def body(self) -> list[dict[str, Any]]:
        """The standard error list."""
        return [{"code": self.status, "description": d} for d in self.descriptions]


def iso(value: dt.datetime | None) -> str | None:
    """Format a time as ISO 8601 with the +08:00 offset (GeoReport requires an explicit zone)."""
    if value is None:
        return None
    return value.astimezone(LOCAL_TZ).isoformat(timespec="seconds")


def check_format(fmt: str) -> str:
    """Accept `json` or `xml` (the resource suffix); anything else is a 404 in Open311 form."""
    if fmt not in FORMATS:
        raise Open311Error(404, f"不支持的格式 .{fmt[:16]}，请使用 .json 或 .xml", error_id="unknown-format")
    return fmt


_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _xml_value(parent: ET.Element, name: str, value: Any) -> None:
    element = ET.SubElement(parent, name)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _xml_value(element, str(key), item)
    elif isinstance(value, list | tuple):
        child = SINGULAR.get(name, "item")
        for item in value:
            _xml_value(element, child, item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = _XML_INVALID.sub("", str(value))  # XML 1.0 cannot carry control characters


def to_xml(root: str, data: Any) -> bytes:
    """Render a dict or list as GeoReport-style XML with the UTF-8 declaration."""
    holder = ET.Element("holder")
    _xml_value(holder, root, data)
    body: bytes = ET.tostring(holder[0], encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def render(data: Any, *, fmt: str, root: str, status: int = 200, headers: Mapping[str, str] | None = None
           ) -> Response:
    """Build the response in the requested format."""
    if fmt == "xml":
        body = to_xml(root, data)
    else:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=FORMATS.get(fmt, FORMATS["json"]), headers=dict(headers or {}))


def render_error(error: Open311Error, *, fmt: str) -> Response:
    """Render an Open311 error list in the requested format (JSON when the format itself was wrong)."""
    return render(error.body(), fmt=fmt if fmt in FORMATS else "json", root="errors", status=error.status,
                  headers=error.headers)
