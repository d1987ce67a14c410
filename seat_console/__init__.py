"""The operators' web workspace (坐席工作台)."""

from pathlib import Path

TEMPLATE_DIR = Path(__file__).parent / "templates"
