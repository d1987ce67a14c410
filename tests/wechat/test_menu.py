"""`intake wechat menu` publishes the custom menu through the API with the shared token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.cli import main
from core.settings import get_settings
from tests.wechat.conftest import APP_ID, APP_SECRET, TOKEN, _truncate_mine


@pytest.fixture
def env(db_url: str, tmp_path: Path, fake_api, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    _truncate_mine(db_url)
    for name, value in {"DATABASE_URL": db_url, "VAR_DIR": str(tmp_path / "var"), "ENV": "test",
                        "WECHAT_TOKEN": TOKEN, "WECHAT_APP_ID": APP_ID, "WECHAT_APP_SECRET": APP_SECRET,
                        "WECHAT_API_BASE_URL": fake_api.base_url}.items():
        monkeypatch.setenv(f"INTAKE_{name}", value)
    get_settings.cache_clear()
    yield fake_api
    get_settings.cache_clear()


def test_menu_is_created(env) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(main, ["wechat", "menu"])
    assert result.exit_code == 0, result.output
    assert "我要上报 / 我的案件 / 办事指南" in result.output
    [menu] = env.state.menus
    names = [b["name"] for b in menu["button"]]
    assert names == ["我要上报", "我的案件", "办事指南"]
    assert menu["button"][0] == {"type": "click", "name": "我要上报", "key": "REPORT"}
    assert {s["key"] for s in menu["button"][1]["sub_button"]} == {"MY_CASES", "RATE", "POINTS", "BIND"}
    assert env.state.stable_calls == 1


def test_bad_menu_files_are_refused_before_calling_wechat(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "menu.json"
    bad.write_text(json.dumps({"button": [{"type": "click", "name": "一个名字特别特别长的菜单", "key": "X"}]}),
                   encoding="utf-8")
    result = CliRunner().invoke(main, ["wechat", "menu", "--file", str(bad)])
    assert result.exit_code != 0 and "16 bytes" in result.output
    assert env.state.menus == []
    printed = CliRunner().invoke(main, ["wechat", "menu", "--print"])
    assert printed.exit_code == 0 and json.loads(printed.output)["button"][0]["key"] == "REPORT"


def test_wechat_errors_are_reported(env) -> None:  # type: ignore[no-untyped-def]
    env.state.fail_next = [40018]
    result = CliRunner().invoke(main, ["wechat", "menu"])
    assert result.exit_code != 0 and "40018" in result.output
