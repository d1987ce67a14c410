"""Per-connection health: each long-lived client registers a check that /status runs."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


class Health(enum.StrEnum):
    """State of one connection."""

    OK = "ok"
    FAIL = "fail"
    NOT_CONFIGURED = "not configured"


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    """The health of one connection with a short, non-secret detail."""

    status: Health
    detail: str = ""


Check = Callable[[], Awaitable[ComponentStatus]]


class StatusRegistry:
    """Named checks for /status; every check runs with a timeout so one hung peer cannot hang the page."""

    def __init__(self, *, timeout: float = 3.0) -> None:
        """Create an empty registry."""
        self._checks: dict[str, Check] = {}
        self._timeout = timeout

    def register(self, name: str, check: Check) -> None:
        """Add or replace the check called `name`."""
        self._checks[name] = check

    def not_configured(self, name: str, detail: str) -> None:
        """Register a component that is switched off by configuration."""

        async def _check() -> ComponentStatus:
            return ComponentStatus(Health.NOT_CONFIGURED, detail)

        self._checks[name] = _check

    async def run(self) -> dict[str, ComponentStatus]:
        """Run every check concurrently."""

        async def _one(name: str, check: Check) -> tuple[str, ComponentStatus]:
            try:
                return name, await asyncio.wait_for(check(), timeout=self._timeout)
            except TimeoutError:
                return name, ComponentStatus(Health.FAIL, "timeout")
            except Exception as err:  # noqa: BLE001 - a failing check is a status, not an error
                log.warning("status check %s failed: %s", name, err)
                return name, ComponentStatus(Health.FAIL, type(err).__name__)

        results = await asyncio.gather(*(_one(n, c) for n, c in self._checks.items()))
        return dict(sorted(results))
