"""Classifier wiring: load (or first build) the model in a background thread and report it on /status."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select

from classifier.corpus import record_correction
from core.cases.models import Case, DraftCase
from core.cases.service import LABEL_KIND
from core.context import AppContext
from core.models import OutboxJob
from core.status import ComponentStatus, Health
from kb.service import Routing, Taxonomy

log = logging.getLogger(__name__)


class ClassifierHolder:
    """Stands in for the Classifier from start-up on: answers once the background load has finished."""

    def __init__(self, *, var_dir: Path, review_threshold: float, taxonomy: Taxonomy, routing: Routing,
                 build: bool = True) -> None:
        """Prepare the holder; nothing loads until `start`."""
        self._var_dir = var_dir
        self._threshold = review_threshold
        self._taxonomy = taxonomy
        self._routing = routing
        self._build = build
        self._service: Any = None
        self._error: str | None = None
        self._absent: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load in a daemon thread so the app starts serving at once."""
        self._thread = threading.Thread(target=self._load, name="classifier-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            from classifier.service import Classifier
            from classifier.store import current_path, newest_cached

            stale = newest_cached(self._var_dir) if self._build else None
            if stale is not None and stale != current_path(self._var_dir):
                # New labels (or a new corpus) mean training for half a minute: suggest with the previous
                # model meanwhile rather than not at all, then swap.
                self._service = Classifier.from_file(stale, review_threshold=self._threshold,
                                                     taxonomy=self._taxonomy, routing=self._routing)
                log.info("classifier %s serving while the model for the current data trains",
                         self._service.model_id)
            self._service = Classifier.load(var_dir=self._var_dir, review_threshold=self._threshold,
                                            taxonomy=self._taxonomy, routing=self._routing, build=self._build)
            log.info("classifier %s ready", self._service.model_id)
        except FileNotFoundError as err:
            # Only when building is switched off (test apps): no model is a configuration, not a failure.
            self._absent = str(err)[:200]
            log.info("classifier model not built: %s", self._absent)
        except Exception as err:  # noqa: BLE001 - a broken model is a status, the rest of the app runs on
            self._error = f"{type(err).__name__}: {err}"[:200]
            log.warning("classifier model not available: %s", self._error)
        finally:
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading finished (for tests and the CLI); True when it did."""
        return self._done.wait(timeout)

    @property
    def service(self) -> Any:
        """Return the loaded Classifier, or None."""
        return self._service

    def status(self) -> ComponentStatus:
        """Report ok with the model id, fail with the reason, or not (yet) available."""
        if self._service is not None:
            retrain = f"; training the current model failed: {self._error}" if self._error else ""
            return ComponentStatus(Health.OK, f"{self._service.model_id}{retrain}"[:200])
        if self._error is not None:
            return ComponentStatus(Health.FAIL, self._error)
        if self._absent is not None:
            return ComponentStatus(Health.NOT_CONFIGURED, self._absent)
        # Still loading (or training on first start): suggestions are optional, so this is no failure
        # that should turn /status into a 503.
        return ComponentStatus(Health.NOT_CONFIGURED, "loading")

    def _ready(self) -> Any:
        if self._service is None:
            from classifier.service import ModelNotReady

            raise ModelNotReady(self._error or self._absent or "the classifier model is still loading")
        return self._service

    def suggest(self, text: str, *, district: str | None = None, k: int = 5) -> Any:
        """Delegate to the loaded Classifier (raises ModelNotReady before that)."""
        return self._ready().suggest(text, district=district, k=k)

    async def suggest_async(self, text: str, *, district: str | None = None, k: int = 5) -> Any:
        """Predict in a worker thread, never on the event loop."""
        service = self._ready()
        return await asyncio.to_thread(service.suggest, text, district=district, k=k)


def wire(ctx: AppContext) -> None:
    """Start loading the model, expose it as ctx.classifier and register the "classifier_model" check."""
    settings = ctx.settings
    # Test apps start by the dozen with throw-away var dirs: they use a prebuilt model or none, never train.
    holder = ClassifierHolder(var_dir=settings.var_dir, review_threshold=settings.classifier_review_threshold,
                              taxonomy=ctx.kb.taxonomy, routing=ctx.kb.routing, build=settings.env != "test")
    holder.start()
    ctx.classifier = holder

    async def learn(job: OutboxJob) -> None:
        # The operator's choice on acceptance is the label: appended for the next build (`intake classifier
        # build`, or the next start, which serves the previous model while it trains).
        async with ctx.sessions() as session:
            case = await session.scalar(select(Case).where(Case.draft_id == int(job.payload["draft_id"])))
            draft = await session.get(DraftCase, int(job.payload["draft_id"]))
        if case is None or draft is None or not draft.raw_text:
            return
        recorded = await asyncio.to_thread(record_correction, draft.raw_text, case.case_type_code,
                                           var_dir=settings.var_dir, known_codes=ctx.kb.taxonomy.types)
        if recorded and case.case_type_code != draft.suggested_type_code:
            log.info("operator corrected draft %s: %s -> %s", draft.number, draft.suggested_type_code,
                     case.case_type_code)

    ctx.outbox.register(LABEL_KIND, learn)

    async def check() -> ComponentStatus:
        return holder.status()

    ctx.status.register("classifier_model", check)
