"""The optional progress display of `create_and_wait`: a rich bar per stage (an experiment's stages each
carry their own progress; a screening has one bar whose label follows its stage)."""

from __future__ import annotations

from typing import Any


class ProgressView:
    def __init__(self, enabled: bool, label: str) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}
        self._label = label
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._progress.start()

    def _bar(self, name: str, fraction: float, text: str) -> None:
        if name not in self._tasks:
            self._tasks[name] = self._progress.add_task(text, total=1.0)
        self._progress.update(self._tasks[name], completed=max(0.0, min(1.0, fraction)), description=text)

    def update(self, obj: Any) -> None:
        if self._progress is None:
            return
        stages = getattr(obj, "stages", None)
        if stages:
            for st in stages:
                self._bar(
                    st.name, 1.0 if st.status == "succeeded" else st.progress, f"{st.name} ({st.status})"
                )
        else:
            self._bar(self._label, obj.progress, f"{obj.id} {obj.stage or obj.status}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
