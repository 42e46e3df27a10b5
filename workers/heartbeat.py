"""One heartbeat for every kind of run (a screening, a shard of one, an experiment stage): a thread that marks
the run alive every `FTGUARD_HEARTBEAT_INTERVAL_S` while its job runs, whatever the job is doing (loading a
model, one long forward pass). A run silent for `FTGUARD_STALE_AFTER_S` has lost its worker, and the one
reconciler sends it again. `beat` is the run kind's own conditional UPDATE: it touches the run only while
this job still owns it, so a superseded job's thread writes nothing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy.orm import Session

from app.core.db import Database

log = logging.getLogger("ftguard.worker")


class Heartbeat:
    def __init__(
        self, db: Database, beat: Callable[[Session], None], *, interval_s: float, name: str
    ) -> None:
        self.db, self.beat, self.interval_s, self.name = db, beat, interval_s, name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                with self.db.session() as session:
                    self.beat(session)
            except Exception:  # a missed beat is not fatal; the next one may get through
                log.warning("heartbeat not saved", exc_info=True, extra={"job_id": self.name})
