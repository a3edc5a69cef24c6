"""What was published, as the audit reads it back: every message of the billing topic
(:class:`BillingLedger`) and the latest revision per window of each stats topic
(:class:`WindowLedger`), with where each was (partition and offset).

Pure logic: no faust, no aiokafka. A message that cannot be a record of the audit's
scope (undecodable, malformed, a key that names no window) becomes a
:class:`streams.audit.scope.Difference` in the ledger's ``problems``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from streams.audit.scope import Difference, Scope, where_note
from streams.core.codec import CodecError, SchemaSet, default_schemas
from streams.core.keys import (
    MARKER_KEY_PREFIX,
    billing_record_id,
    parse_billing_record_id,
    parse_window_key,
)
from streams.core.times import HOUR_NS, hour_of, iso
from streams.core.windows.acc import WINDOW_NAMES


@dataclass(slots=True)
class BillingCopy:
    """One message of a billing record_id."""

    record: dict[str, Any] | None  # None: a tombstone
    where: str


@dataclass(slots=True)
class LatestWindow:
    """The latest message of a window key, still encoded."""

    payload: bytes | None  # None: a tombstone is the latest message of the key
    where: str
    revision: int | None = None  # None: not decoded (a key seen once is decoded only once)
    conflict: str | None = None


def malformations(record: dict[str, Any], key_text: str | None) -> list[str]:
    """What is wrong with a decoded billing record in itself (its key, id and hour)."""
    rid = record["record_id"]
    wants = billing_record_id(record["tenant_id"], record["volume_id"],
                              record["hour_start_ns"], record["sequence"])
    problems = []
    if key_text != rid:
        problems.append(f"key {key_text!r} is not its record_id {rid!r}")
    if rid != wants:
        problems.append(f"record_id {rid!r} does not match its fields ({wants!r})")
    if record["hour_start_ns"] % HOUR_NS or record["hour_length_ns"] != HOUR_NS:
        problems.append("hour_start_ns/hour_length_ns is not an epoch-aligned hour")
    if record["kind"] != ("hour" if record["sequence"] == 0 else "adjustment"):
        problems.append(f"kind {record['kind']!r} with sequence {record['sequence']}")
    return problems


class BillingLedger:
    """Every message of the billing topic, grouped by record_id (key)."""

    def __init__(self, scope: Scope, schemas: SchemaSet | None = None) -> None:
        self.scope = scope
        self.schemas = schemas or default_schemas()
        self.copies: dict[str, list[BillingCopy]] = {}
        self.problems: list[Difference] = []
        self.messages = 0

    def add(self, key: bytes | None, value: bytes | None, where: str = "") -> None:
        """One message: its key, its value (None for a tombstone) and where it was."""
        self.messages += 1
        key_text = key.decode(errors="replace") if key is not None else None
        if value is None:
            self._add_tombstone(key_text, where)
            return
        try:
            _, record = self.schemas.decode(value, expect="BillingRecord")
        except CodecError as exc:
            volume, hour = parse_billing_record_id(key_text)
            if self.scope.volume is None or volume == self.scope.volume:
                self.problems.append(Difference(
                    volume, hour, "billing", f"undecodable message{where_note(where)}: {exc}"))
            return
        if not (self.scope.wants(record["volume_id"]) and self.scope.hour_in(
                record["hour_start_ns"])):
            return
        for problem in malformations(record, key_text):
            self.problems.append(Difference(
                record["volume_id"], record["hour_start_ns"], "billing",
                f"malformed record{where_note(where)}: " + problem))
        self.copies.setdefault(key_text if key_text is not None else record["record_id"],
                               []).append(BillingCopy(record, where))

    def _add_tombstone(self, key_text: str | None, where: str) -> None:
        """Kept when its key is in scope, or names no record while all volumes are."""
        volume, hour = parse_billing_record_id(key_text)
        if (volume is None and self.scope.volume is None) or (
                volume is not None and hour is not None and self.scope.wants(volume)
                and self.scope.hour_in(hour)):
            self.copies.setdefault(key_text or "", []).append(BillingCopy(None, where))


class WindowLedger:
    """The latest revision per window key of one stats topic, kept encoded: most keys have
    one message, decoded once when compared (decoding is the costly part)."""

    def __init__(self, length_ns: int, scope: Scope, schemas: SchemaSet | None = None) -> None:
        self.length_ns = length_ns
        self.scope = scope
        self.schemas = schemas or default_schemas()
        self.latest: dict[tuple[str, int], LatestWindow] = {}
        self.problems: list[Difference] = []
        self.messages = 0

    @property
    def what(self) -> str:
        return f"window {WINDOW_NAMES[self.length_ns]}"

    def decode(self, payload: bytes) -> dict[str, Any]:
        return self.schemas.decode(payload, expect="WindowStats")[1]

    def add(self, key: bytes | None, value: bytes | None, where: str = "") -> None:
        if key is not None and key.startswith(MARKER_KEY_PREFIX):
            return  # a watermark marker between the windows (schemas/watermark.avsc)
        self.messages += 1
        parsed = parse_window_key(key)
        if parsed is None:
            self._stray(key, value, where)
            return
        if not (self.scope.wants(parsed[0]) and self.scope.window_in(parsed[1])):
            return
        previous = self.latest.get(parsed)
        entry = LatestWindow(value, where)
        if value is None or previous is None or previous.payload is None:
            self.latest[parsed] = entry  # a tombstone deletes whatever came before
        elif value != previous.payload:  # identical copies are one message
            mine, theirs = self._revision(entry), self._revision(previous)
            if mine > theirs:
                self.latest[parsed] = entry
            elif mine == theirs:
                previous.conflict = (f"conflicting copies of revision {mine} "
                                     f"({previous.where} and {where})")

    def _revision(self, entry: LatestWindow) -> int:
        if entry.revision is None:
            try:
                entry.revision = int(self.decode(entry.payload)["revision"]) if (
                    entry.payload is not None) else -1
            except CodecError:
                entry.revision = -1  # reported when compared, if it stays the latest
        return entry.revision

    def _stray(self, key: bytes | None, value: bytes | None, where: str) -> None:
        """A message whose key names no window: reported, never taken as a window."""
        if value is None:
            return
        try:
            record = self.decode(value)
        except CodecError as exc:
            if self.scope.volume is None:
                self.problems.append(Difference(
                    None, None, self.what, f"undecodable message{where_note(where)}: {exc}"))
            return
        volume_id, start = record["volume_id"], record["window_start_ns"]
        if self.scope.wants(volume_id) and self.scope.window_in(start):
            self.problems.append(Difference(
                volume_id, hour_of(start), self.what,
                f"window {iso(start)}{where_note(where)}: key {key!r} does not name it"))
