"""Settings validation and phone-number handling."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError

from core.phone import InvalidPhone, mask_openid, mask_phone, normalise_phone
from core.settings import Settings
from kb.service import KnowledgeBase, TimeLimit, WorkCalendar


def test_prod_refuses_default_secrets() -> None:
    with pytest.raises(ValidationError, match="INTAKE_SECRET_KEY"):
        Settings(env="prod")
    strong = "s" * 32
    ok = Settings(env="prod", secret_key=strong, workflow_api_key=strong, workflow_webhook_secret=strong,
                  department_api_token=strong)
    assert ok.env == "prod"


def test_env_prefix_and_url_normalisation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE_DATABASE_URL", "postgres://u@h/db")
    monkeypatch.setenv("INTAKE_REDIS_URL", "redis://127.0.0.1:6379/0")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://u@h/db"
    assert settings.sync_database_url == "postgresql+psycopg://u@h/db"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert Settings(database_url="sqlite:///var/x.db").database_url == "sqlite+aiosqlite:///var/x.db"


def test_http_workflow_needs_a_url() -> None:
    with pytest.raises(ValidationError, match="INTAKE_WORKFLOW_URL"):
        Settings(workflow_backend="http")


@pytest.mark.parametrize("raw", ["13812345678", "138 1234 5678", "+86 138-1234-5678", "008613812345678",
                                 "8613812345678"])
def test_phone_normalisation(raw: str) -> None:
    assert normalise_phone(raw) == "+8613812345678"


def test_landline_and_masking() -> None:
    assert normalise_phone("010-12345678") == "+861012345678"
    assert mask_phone("+8613812345678") == "138****5678"
    assert mask_openid("oAbCdEfGhIjKlMn") == "oAbC…lMn"
    with pytest.raises(InvalidPhone):
        normalise_phone("12345")
    with pytest.raises(InvalidPhone):
        normalise_phone("not a phone")


def test_work_calendar_skips_nights_and_weekends() -> None:
    cal = WorkCalendar(8, 18)
    friday_5pm = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)  # 17:00 in Shanghai
    deadline = cal.add(friday_5pm, TimeLimit(4, "work_hours"))
    assert deadline == dt.datetime(2026, 11, 23, 3, 0, tzinfo=dt.UTC)  # Monday 11:00 local
    assert cal.add(friday_5pm, TimeLimit(1, "work_days")).date() == dt.date(2026, 11, 23)


def test_kb_taxonomy_and_routing() -> None:
    kb = KnowledgeBase.load()
    assert len(kb.taxonomy.types) == 250
    manhole = kb.taxonomy.get("01002")
    assert manhole is not None and manhole.major_code == "01"
    assert kb.routing.department_for(manhole, district="中心区")
    for case_type in kb.taxonomy.types.values():
        assert kb.routing.department_for(case_type, district="江北区"), case_type.code
        assert kb.limits.limit_for(case_type).amount > 0
