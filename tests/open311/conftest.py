"""Open API fixtures: clean open311 tables, settings allowing local receivers, API keys, a webhook receiver."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.conftest import Api, make_settings
from tests.fakes.webhook_receiver import WebhookReceiver

OPEN311_TABLES = ("open311_delivery_attempts", "open311_deliveries", "open311_alarm_incidents", "open311_requests",
                  "open311_rate_counters", "open311_clients")


@pytest.fixture(autouse=True)
def _clean_open311(db_url: str) -> None:
    """The shared PostgreSQL database keeps rows between tests: empty our tables too."""
    if not db_url.startswith("postgresql"):
        return

    async def _truncate() -> None:
        import asyncpg

        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute(f"TRUNCATE {', '.join(OPEN311_TABLES)} RESTART IDENTITY CASCADE")
        finally:
            await conn.close()

    asyncio.run(_truncate())


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Test settings that let webhooks reach receivers on 127.0.0.1 and keep photos small."""
    return make_settings(db_url, tmp_path, open311_webhook_allow_private=True, open311_photo_max_bytes=200_000,
                         open311_webhook_max_attempts=4)


@dataclass
class Key:
    """An API key made for a test."""

    name: str
    key: str
    secret: str
    client_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Api-Key": self.key}


def make_key(api: Api, name: str, *scopes: str, rate: int = 1000, quota: int = 10_000,
             webhook_url: str | None = None) -> Key:
    """Create an API client through the service layer."""
    from core.open311 import service
    from core.open311.models import Scope

    async def _create() -> Key:
        async with api.ctx.uow() as session:
            client, key = await service.create_client(
                session=session, name=name, scopes=[Scope(s) for s in (scopes or ("open311",))],
                rate_per_minute=rate, quota_per_day=quota, webhook_url=webhook_url, actor="test")
            return Key(name, key, client.signing_secret, client.id)

    result: Key = api.run(_create)
    return result


def query(api: Api, stmt: Any) -> list[Any]:
    """Run a select in the app's loop and return all scalars."""

    async def _q() -> list[Any]:
        async with api.ctx.sessions() as session:
            return list(await session.scalars(stmt))

    result: list[Any] = api.run(_q)
    return result


def drive_to_close(api: Api, draft_id: int, case_type: str = "01002") -> str:
    """立案 the draft, then dispatch → handle → feedback → verify through the built-in workflow; return the number."""
    accepted = api.post(f"/api/drafts/{draft_id}/accept", json={"case_type_code": case_type})
    assert accepted.status_code == 200, accepted.text
    api.drain()
    number = api.get(f"/api/drafts/{draft_id}").json()["case_number"]
    assert number
    dept = {"Authorization": "Bearer dept-token"}
    for action, body in (("dispatch", {"note": "派遣至排水公司", "department": "drainage"}), ("handle", {}),
                         ("feedback", {"note": "已更换井盖", "attachments": [{"kind": "photo", "url": "/media/after.jpg"}]}),
                         ("verify", {"passed": True, "note": "现场核查已修复"})):
        response = api.client.post(f"/api/workflow/cases/{number}/{action}", json=body, headers=dept)
        assert response.status_code == 200, response.text
    api.drain()
    return str(number)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A real HTTP receiver on a free local port."""
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def real_classifier(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The shipped case-type classifier: the prebuilt model of the working var dir if any, else built once here."""
    import importlib
    import os
    import shutil

    service = pytest.importorskip("classifier.service")
    var_dir = tmp_path_factory.mktemp("open311-classifier")
    try:
        store = importlib.import_module("classifier.store")
        target = store.cache_path(var_dir, store.fingerprint(var_dir=var_dir))
        prebuilt = store.cache_path(Path(os.environ.get("INTAKE_VAR_DIR", "var")), store.fingerprint(var_dir=None))
        if prebuilt.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(prebuilt, target)
    except (ImportError, AttributeError):
        pass  # the classifier's cache layout moved: build below
    return service.Classifier.load(var_dir=var_dir, build=True)
