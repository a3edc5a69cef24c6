"""What the views need of a worker: the small interface ``pipeline.app.Pipeline`` meets
by its shape, so that ``api`` never imports ``pipeline`` (``streams.worker`` composes them)."""

from __future__ import annotations

from typing import Any, Protocol

import faust

from streams.config import Settings
from streams.core.counters import VolumeState


class WorkerState(Protocol):
    """One worker's app, its counters table and its windows, read by the views."""

    @property
    def settings(self) -> Settings: ...

    @property
    def app(self) -> faust.App: ...

    @property
    def counters(self) -> Any:
        """The faust table of VolumeState snapshots, keyed by volume_id's UTF-8 bytes."""

    @property
    def stats(self) -> Any:
        """A dataclass of what this worker has done since it started (GET /status)."""

    def load_state(self, volume_id: str) -> VolumeState | None: ...

    def input_positions(self) -> list[tuple[str, int, int | None, int | None, int | None]]:
        """(topic, partition, highwater, next offset to handle, committed offset) of every
        input partition assigned to this worker."""

    def windows_of(self, partition: int, volume_id: str, length_ns: int, from_ns: int,
                   to_ns: int) -> list[Any]:
        """Stored windows of one volume of ``length_ns`` starting in [from_ns, to_ns)."""
