"""HTTP client for an external 数字城管 platform (contract in docs/workflow-contract.md)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from typing import Any

import httpx

from core.cases.models import Step
from core.workflow.ports import Receipt, StatusUpdate, Submission, WorkflowError, WorkflowRejected

SIGNATURE_HEADER = "X-Intake-Signature"
TIMESTAMP_HEADER = "X-Intake-Timestamp"
MAX_SKEW_SECONDS = 300


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the webhook signature: hex HMAC-SHA256 over `timestamp.body`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, *, timestamp: str | None, signature: str | None, body: bytes,
                     now: float | None = None) -> bool:
    """Check a webhook signature and refuse stale or future timestamps (replay protection)."""
    if not timestamp or not signature:
        return False
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs((now or time.time()) - ts) > MAX_SKEW_SECONDS:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def parse_update(raw: dict[str, Any]) -> StatusUpdate:
    """Build a StatusUpdate from the contract's JSON (raises ValueError/KeyError on bad input)."""
    deadline = raw.get("deadline_at")
    return StatusUpdate(
        case_number=str(raw["case_number"]),
        seq=int(raw["seq"]),
        step=Step(raw["step"]),
        at=dt.datetime.fromisoformat(str(raw["at"])),
        submit_key=raw.get("submit_key"),
        note=raw.get("note"),
        actor=raw.get("actor"),
        department=raw.get("department"),
        deadline_at=dt.datetime.fromisoformat(deadline) if deadline else None,
        attachments=list(raw.get("attachments") or []),
        rating=int(raw["rating"]) if raw.get("rating") is not None else None,
    )


class HttpWorkflow:
    """Submits cases and ratings to the platform; every call carries an Idempotency-Key."""

    name = "http"

    def __init__(self, *, base_url: str, api_key: str, http: httpx.AsyncClient, timeout: float) -> None:
        """Use the shared HTTP client; `base_url` is the platform's API root."""
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._http = http
        self._timeout = timeout

    async def _post(self, path: str, payload: dict[str, Any], key: str) -> dict[str, Any]:
        try:
            response = await self._http.post(
                f"{self._base}{path}",
                content=json.dumps(payload, ensure_ascii=False, default=str).encode(),
                headers={**self._headers, "Idempotency-Key": key, "Content-Type": "application/json"},
                timeout=self._timeout,
            )
        except httpx.HTTPError as err:
            raise WorkflowError(f"{type(err).__name__} calling {path}") from err
        if response.status_code >= 500 or response.status_code in (408, 425, 429):
            raise WorkflowError(f"platform answered {response.status_code} on {path}")
        if response.status_code >= 400:
            raise WorkflowRejected(f"platform refused {path}: {response.status_code} {response.text[:200]}")
        try:
            body = response.json()
        except ValueError as err:
            raise WorkflowError(f"platform sent a non-JSON answer on {path}") from err
        return body if isinstance(body, dict) else {}

    async def submit(self, submission: Submission) -> Receipt:
        """POST /cases; the platform returns the same case for a repeated Idempotency-Key."""
        payload = {
            "submit_key": submission.submit_key,
            "case_type_code": submission.case_type_code,
            "description": submission.description,
            "channel": submission.channel,
            "reported_at": submission.reported_at.isoformat(),
            "department": submission.department,
            "urgent": submission.urgent,
            "location": {"address": submission.address, "district": submission.district,
                         "lat": submission.lat, "lng": submission.lng},
            "media": submission.media,
        }
        body = await self._post("/cases", payload, submission.submit_key)
        try:
            deadline = body.get("deadline_at")
            return Receipt(
                case_number=str(body["case_number"]),
                step=Step(body.get("step", Step.REGISTER.value)),
                seq=int(body.get("seq", 1)),
                at=dt.datetime.fromisoformat(str(body["at"])),
                department=body.get("department"),
                deadline_at=dt.datetime.fromisoformat(deadline) if deadline else None,
            )
        except (KeyError, ValueError) as err:
            raise WorkflowError(f"platform receipt is malformed: {err}") from err

    async def rate(self, *, case_number: str, score: int, comment: str | None, key: str) -> None:
        """POST /cases/{number}/rating."""
        await self._post(f"/cases/{case_number}/rating", {"score": score, "comment": comment}, key)

    async def check(self) -> bool:
        """GET /health answers 200."""
        try:
            response = await self._http.get(f"{self._base}/health", headers=self._headers, timeout=3)
        except httpx.HTTPError:
            return False
        return response.status_code == 200
