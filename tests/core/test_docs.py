"""Every setting is documented in docs/settings.md."""

from __future__ import annotations

from pathlib import Path

from core.settings import Settings


def test_every_setting_is_documented() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [name for name in Settings.model_fields if f"`INTAKE_{name.upper()}`" not in doc]
    assert missing == []
