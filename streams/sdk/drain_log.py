"""What the producer's drain has been through: outages, backlogs and acknowledgements,
counted for the spool's figures and told in the log lines an operator reads
(docs/producer.md, "Metrics"). No I/O but logging."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from streams.sdk.kafka_client import describe
from streams.sdk.spool import Spool, SpoolFull

log = logging.getLogger("streams.sdk.producer")  # the producer's lines, as operators grep
REPEAT_LOG_S = 30.0


@dataclass(frozen=True)
class SpoolStats:
    """The spool's figures (docs/producer.md, "Metrics")."""

    directory: str
    records_spooled: int  # appended while Kafka was unreachable or a backlog drained
    records_recovered: int  # found in the spool at start: left by an earlier run
    records_refused: int  # SpoolFull: their events are counted nowhere (logged)
    events_refused: int
    records_acked: int
    outages: int
    drains: int  # backlogs sent after an outage or a restart
    spool_records: int  # now: not acknowledged by Kafka yet
    spool_bytes: int  # now, on disk: what counts against spool_max_bytes
    spool_peak_bytes: int
    last_drain_records: int
    last_drain_s: float
    records_quarantined: int = 0  # refused by Kafka for good: in <spool dir>/QUARANTINE
    corrupt_bytes_dropped: int = 0  # torn tails and corrupt regions found on opening

    def lines(self) -> list[str]:
        rate = self.last_drain_records / self.last_drain_s if self.last_drain_s > 0 else 0.0
        out = [f"  spool {self.directory}: {self.spool_records} record(s) "
               f"({self.spool_bytes} bytes) left, peak {self.spool_peak_bytes} bytes; "
               f"{self.records_spooled} spooled (Kafka away, or a backlog draining), "
               f"{self.records_recovered} recovered from an earlier run, {self.drains} drain(s)"]
        if self.drains:
            out.append(f"  last drain: {self.last_drain_records} records in "
                       f"{self.last_drain_s:.1f} s ({rate:,.0f} records/s)")
        if self.records_refused:
            out.append(f"  SPOOL FULL: {self.records_refused} record(s), "
                       f"{self.events_refused} event(s) refused and not sent")
        if self.records_quarantined:
            out.append(f"  QUARANTINED: {self.records_quarantined} record(s) Kafka refused for "
                       f"good (too large, invalid, not authorised), kept in "
                       f"{self.directory}/QUARANTINE and not sent")
        if self.corrupt_bytes_dropped:
            out.append(f"  CORRUPT: {self.corrupt_bytes_dropped} byte(s) of the spool failed "
                       "their CRC on opening and were dropped (the log says where)")
        if self.spool_records:
            out.append(f"  {self.spool_records} record(s) wait in the spool: the next "
                       "producer started on it sends them first")
        return out


class DrainLog:
    """The drain's history, fed by the producer as things happen (``now``: monotonic s)."""

    def __init__(self, bootstrap_servers: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.counts = dict.fromkeys(
            ("records_spooled", "records_recovered", "records_refused", "events_refused",
             "records_acked", "outages", "drains", "last_drain_records",
             "records_quarantined"), 0)
        self.last_drain_s = 0.0
        self.outage_since: float | None = None  # Kafka unreachable since
        self.backlog_since: float | None = None  # records waiting since an outage/restart
        self.drain_started: float | None = None
        self.drain_acked = 0
        self._last_log_at: dict[str, float] = {}

    def on_recovered(self, spool: Spool, now: float) -> None:
        self.counts["records_recovered"] = spool.recovered
        if spool.recovered:
            log.warning("spool %s holds %d record(s) from an earlier run: sending them "
                        "before anything new", spool.directory, spool.recovered)
            self.backlog_since = self.drain_started = now

    def on_spooled(self) -> None:
        if self.backlog_since is not None:
            self.counts["records_spooled"] += 1

    def on_refused(self, exc: SpoolFull, events: int, now: float) -> None:
        """Never silent: counted, logged, in the summary."""
        self.counts["records_refused"] += 1
        self.counts["events_refused"] += events
        self.log_every("full", now, logging.ERROR, "%s (%d record(s), %d event(s) refused "
                       "so far)", exc, self.counts["records_refused"],
                       self.counts["events_refused"])

    def on_ack(self, spool: Spool, now: float) -> None:
        self.counts["records_acked"] += 1
        if self.outage_since is not None:
            log.warning("Kafka is back after %.1f s: sending the %d record(s) of the spool",
                        now - self.outage_since, spool.records + 1)
            self.outage_since = None
            self.drain_started, self.drain_acked = now, 0
        self.drain_acked += 1

    def on_quarantined(self) -> None:
        """Logged by the quarantine itself, once per entry."""
        self.counts["records_quarantined"] += 1

    def on_outage(self, spool: Spool, exc: BaseException, now: float) -> None:
        if self.outage_since is None:
            self.outage_since = now
            self.backlog_since = self.backlog_since or now
            self.counts["outages"] += 1
            self._last_log_at["outage"] = now
            log.warning("Kafka at %s unreachable (%s): records wait in the spool %s",
                        self.bootstrap_servers, describe(exc), spool.directory)
            return
        self.log_every("outage", now, logging.WARNING, "Kafka still unreachable after %.0f s "
                       "(%s): %d record(s), %d bytes in the spool", now - self.outage_since,
                       describe(exc), spool.records, spool.disk_bytes)

    def on_empty(self, now: float) -> None:
        """The spool was read empty: a backlog that was draining has drained."""
        if self.backlog_since is not None and self.outage_since is None:
            seconds = now - (self.drain_started or now)
            self.counts["drains"] += 1
            self.counts["last_drain_records"], self.last_drain_s = self.drain_acked, seconds
            log.warning("spool drained: %d record(s) in %.1f s", self.drain_acked, seconds)
            self.backlog_since = self.drain_started = None

    def log_every(self, topic: str, now: float, level: int, message: str, *args: Any) -> None:
        """At most one line per ``topic`` every REPEAT_LOG_S."""
        if now - self._last_log_at.get(topic, -REPEAT_LOG_S) >= REPEAT_LOG_S:
            self._last_log_at[topic] = now
            log.log(level, message, *args)

    def stats(self, spool: Spool) -> SpoolStats:
        c = self.counts
        return SpoolStats(
            str(spool.directory), c["records_spooled"], c["records_recovered"],
            c["records_refused"], c["events_refused"], c["records_acked"], c["outages"],
            c["drains"], spool.records, spool.disk_bytes, spool.peak_bytes,
            c["last_drain_records"], self.last_drain_s, c["records_quarantined"],
            spool.dropped_bytes)
