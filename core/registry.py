"""Import every domain's models so the metadata is complete (for Alembic and tests)."""

from __future__ import annotations

import importlib
import importlib.util

CORE_MODEL_MODULES = ("core.models", "core.cases.models", "core.workflow.models")
CORE_CHANNELS = ("open311",)
DOMAINS = ("hotline", "wechat", "sms", "classifier", "kb", "seat_console")


def domain_modules(suffix: str) -> list[str]:
    """Return `<domain>.<suffix>` for every domain that has such a module."""
    names = []
    for domain in DOMAINS:
        name = f"{domain}.{suffix}"
        if importlib.util.find_spec(name) is not None:
            names.append(name)
    return names


def import_all_models() -> None:
    """Import the model modules of the core and of every domain that has one."""
    for name in (*CORE_MODEL_MODULES, *channel_modules("models"), *domain_modules("models")):
        importlib.import_module(name)


def channel_modules(suffix: str) -> list[str]:
    """Return `core.<channel>.<suffix>` for the intake channels that live in the core (e.g. open311)."""
    return [f"core.{c}.{suffix}" for c in CORE_CHANNELS if importlib.util.find_spec(f"core.{c}") is not None
            and importlib.util.find_spec(f"core.{c}.{suffix}") is not None]
