"""What a running stage sees: its experiment, the finished stages before it, progress and cancellation,
the blob store, and a heartbeat that tells other workers it is alive."""

from __future__ import annotations

import json
import logging
import tarfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.errors import Cancelled, Lost
from app.core.storage import staged_file
from app.experiments import transitions
from app.models import Experiment
from workers.runtime import Runtime

log = logging.getLogger("ftguard.worker")
PROGRESS_EVERY_S = 1.0  # SQL writes of progress (and the cancellation check) at most this often
EVENT_EVERY_S = 10.0  # progress events kept in the events table at most this often


@dataclass
class StageOutput:
    result: dict[str, Any]
    artefact_key: str | None = None


@dataclass
class StageContext:
    runtime: Runtime
    experiment: Experiment
    stage: str
    attempt: int
    previous: dict[str, tuple[str | None, dict[str, Any]]]  # finished stage -> (artefact key, result)
    _last_write: float = 0.0
    _last_event: float = 0.0
    _started: float = field(default_factory=time.monotonic)

    @property
    def params(self) -> dict[str, Any]:
        return self.experiment.params

    @property
    def store(self) -> Any:
        return self.runtime.services.store

    def key(self, name: str) -> str:
        """Artefact keys carry the attempt, so a presumed-dead run never overwrites its successor's."""
        e = self.experiment
        return f"experiments/{e.tenant_id}/{e.id}/{self.stage}-{self.attempt}-{name}"

    def artefact(self, stage: str) -> str:
        key = self.previous.get(stage, (None, {}))[0]
        if key is None:
            raise RuntimeError(f"stage {stage} left no artefact")
        return key

    def result(self, stage: str) -> dict[str, Any]:
        return self.previous.get(stage, (None, {}))[1]

    def progress(
        self,
        fraction: float,
        *,
        detail: dict[str, Any] | None = None,
        message: str | None = None,
        force: bool = False,
    ) -> None:
        """Report progress (rate-limited); raises Cancelled or Lost when the stage must stop."""
        t = time.monotonic()
        if not force and message is None and t - self._last_write < PROGRESS_EVERY_S:
            return
        if message is None and detail is not None and t - self._last_event >= EVENT_EVERY_S:
            message = _describe(self.stage, detail)
        if message is not None:
            self._last_event = t
        self._last_write = t
        with self.runtime.services.db.session() as session:
            state = transitions.progress(
                session,
                experiment_id=self.experiment.id,
                stage_name=self.stage,
                attempt=self.attempt,
                fraction=fraction,
                detail=detail,
                message=message,
            )
        if state == "cancelled":
            raise Cancelled()
        if state == "lost":
            raise Lost()

    def check(self) -> None:
        """A cancellation check between steps, batches or items (one SQL read a second at most)."""
        t = time.monotonic()
        if t - self._last_write >= PROGRESS_EVERY_S:
            self._last_write = t
            with self.runtime.services.db.session() as session:
                exp = session.get(Experiment, self.experiment.id)
                if exp is None or exp.status == "cancelled":
                    raise Cancelled()

    # ------------------------------------------------------------------ blobs

    def put_json(self, name: str, value: Any) -> str:
        key = self.key(name)
        with staged_file(self.store, suffix=".json") as (path, fh):
            fh.write(json.dumps(value, ensure_ascii=False).encode())
            fh.close()
            self.store.put_file(key, path)
        return key

    def put_jsonl(self, name: str, rows: Iterable[dict[str, Any]]) -> str:
        key = self.key(name)
        with staged_file(self.store, suffix=".jsonl") as (path, fh):
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
            fh.close()
            self.store.put_file(key, path)
        return key

    def put_dir(self, name: str, folder: Path) -> str:
        """A folder (peft adapter or model) as one uncompressed tar: weights do not compress."""
        key = self.key(name)
        with staged_file(self.store, suffix=".tar") as (path, fh):
            with tarfile.open(fileobj=fh, mode="w") as tar:
                for item in sorted(folder.iterdir()):
                    tar.add(item, arcname=item.name)
            fh.close()
            self.store.put_file(key, path)
        return key


def read_jsonl(store: Any, key: str) -> Iterator[dict[str, Any]]:
    with store.open(key) as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def read_json(store: Any, key: str) -> Any:
    with store.open(key) as fh:
        return json.loads(fh.read())


def extract_dir(store: Any, key: str, target: Path) -> Path:
    """Unpack a folder written by `put_dir` (plain files only: never trust member paths)."""
    target.mkdir(parents=True, exist_ok=True)
    with store.open(key) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
        for member in tar:
            name = Path(member.name).name
            if not member.isfile() or not name or name != member.name:
                continue
            src = tar.extractfile(member)
            if src is None:
                continue
            with (target / name).open("wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
    return target


def _describe(stage: str, d: dict[str, Any]) -> str:
    parts = [stage]
    if "step" in d and "total_steps" in d:
        parts.append(f"step {d['step']}/{d['total_steps']}")
    if d.get("loss") is not None:
        parts.append(f"loss {d['loss']:.4f}")
    if "done" in d and "total" in d:
        parts.append(f"{d['done']}/{d['total']}")
    if d.get("eta_s") is not None:
        parts.append(f"ETA {d['eta_s']:.0f} s")
    return ", ".join(parts)
