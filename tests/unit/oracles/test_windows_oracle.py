"""Pin the window oracle itself with hand-computed cases, so it can judge the pipeline's windows.

Times are written as milliseconds after BASE, which is aligned to the hour (so also to the
minute and the second). In the drawings each window is a run of dashes between bars, and a
request is ``[====)``: in flight from its submit up to (not including) its completion.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracles.windows import (
    HISTOGRAM_BOUNDS_NS,
    exp_bucket,
    exp_representative,
    percentile_from_histogram,
    rollup_oracle,
    union_length,
    windows_oracle,
)

US = 1_000
MS = 1_000_000
S = 1_000_000_000
MINUTE = 60 * S
HOUR = 3600 * S
BASE = 472_222 * HOUR  # 2023-11-14T21:00:00Z
OPS = ("read", "write", "flush", "discard")


def t(ms: int) -> int:
    """BASE + ``ms`` milliseconds."""
    return BASE + ms * MS


def ev(op: str = "read", status: str = "ok", submit_ns: int = 0, complete_ns: int = 0,
       nbytes: int = 4096, volume_id: str = "vol-1", tenant_id: str = "t-1") -> dict:
    """One canonical event (flush carries offset 0 and bytes 0, as section 1 requires)."""
    if op == "flush":
        nbytes = 0
    return {"volume_id": volume_id, "tenant_id": tenant_id, "host_id": "h-1", "op": op,
            "status": status, "offset": 0 if op == "flush" else 8192, "bytes": nbytes,
            "submit_ns": submit_ns, "complete_ns": complete_ns}


def hist(*bins: int) -> list[int]:
    """A 20-bin histogram with one count per listed bin index."""
    counts = [0] * 20
    for index in bins:
        counts[index] += 1
    return counts


def quiet(start_ns: int, length_ns: int = S, volume_id: str = "vol-1",
          tenant_id: str = "t-1") -> dict:
    """A window record with nothing completing and nothing in flight."""
    row: dict = {"volume_id": volume_id, "tenant_id": tenant_id,
                 "window_start_ns": start_ns, "window_length_ns": length_ns}
    for op in OPS:
        row[f"{op}_ios"] = 0
        if op != "flush":
            row[f"{op}_bytes"] = 0
        row[f"{op}_ios_error"] = 0
        row[f"invalid_{op}_ios"] = 0
        row[f"total_{op}_time_ns"] = 0
        row[f"avg_{op}_latency_ns"] = None
        row[f"min_{op}_latency_ns"] = None
        row[f"max_{op}_latency_ns"] = None
        row[f"{op}_latency_histogram"] = [0] * 20
        row[f"{op}_latency_exp"] = {"offset": 0, "counts": [], "zero": 0}
        row[f"p50_{op}_latency_ns"] = None
        row[f"p90_{op}_latency_ns"] = None
        row[f"p99_{op}_latency_ns"] = None
        row[f"p99_9_{op}_latency_ns"] = None
        row[f"{op}_inflight_time_ns"] = 0
        row[f"avg_{op}_queue_depth"] = 0.0
    row["busy_time_ns"] = 0
    row["idle_time_ns"] = length_ns
    row["util"] = 0.0
    return row


def pct(op: str, value: int) -> dict:
    """All four percentiles of ``op`` equal to ``value`` (a window with one timed bin)."""
    return {f"p50_{op}_latency_ns": value, f"p90_{op}_latency_ns": value,
            f"p99_{op}_latency_ns": value, f"p99_9_{op}_latency_ns": value}


# The exponential buckets of the latencies the cases use, by hand: bucket i holds x when
# 2**i < x**32 <= 2**(i + 1) (test_exp_buckets_by_hand checks each with those powers), and
# the representative 2**((2i + 1) / 64) of 100 ms's and 300 ms's, to 60 digits.
EXP_BUCKET = {2 * MS: 669, 100 * MS: 850, 200 * MS: 882, 300 * MS: 901, 400 * MS: 914,
              500 * MS: 924, 2 * S: 988}
REPRESENTATIVE = {850: 100_187_342,  # 100187341.70244744515...
                  901: 302_398_344}  # 302398344.38496149972...


def timed(op: str, latency: int, n: int = 1) -> dict:
    """``n`` timed events of one latency: its exponential bucket, and every percentile is
    that latency (a bucket's representative clamped to [min, max] = [latency, latency])."""
    if latency == 0:
        exp = {"offset": 0, "counts": [], "zero": n}
    else:
        exp = {"offset": EXP_BUCKET[latency], "counts": [n], "zero": 0}
    return {f"{op}_latency_exp": exp, **pct(op, latency)}


def two_latencies(op: str) -> dict:
    """One 100 ms and one 300 ms event: p50 (rank 1) is 100 ms's bucket representative,
    above the min; p90..p99_9 (rank 2) 300 ms's, above the max, so the max."""
    return {f"{op}_latency_exp": {"offset": 850, "counts": [1] + [0] * 50 + [1], "zero": 0},
            f"p50_{op}_latency_ns": REPRESENTATIVE[850], f"p90_{op}_latency_ns": 300 * MS,
            f"p99_{op}_latency_ns": 300 * MS, f"p99_9_{op}_latency_ns": 300 * MS}


def test_exp_buckets_by_hand() -> None:
    for x, i in EXP_BUCKET.items():
        assert 2**i < x**32 <= 2**(i + 1), x
    for i, rep in REPRESENTATIVE.items():  # the nearest integer: rep - 1/2 < r < rep + 1/2
        assert (2 * rep - 1) ** 64 < 2 ** (2 * i + 1 + 64) < (2 * rep + 1) ** 64
    assert [exp_bucket(x) for x in EXP_BUCKET] == list(EXP_BUCKET.values())
    assert [exp_representative(i) for i in REPRESENTATIVE] == list(REPRESENTATIVE.values())
    # 1 = base**0 is in bucket -1; 2 = base**32 closes bucket 31; 2**k + 1 opens 32k
    assert [exp_bucket(x) for x in (1, 2, 3, 1 << 40, (1 << 40) + 1)] == [-1, 31, 50, 1279,
                                                                          1280]


# ---------------------------------------------------------------------------------------------
# Bounds and record shape


def test_histogram_bounds() -> None:
    assert HISTOGRAM_BOUNDS_NS == (
        10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
        1_000_000, 2_000_000, 5_000_000, 10_000_000, 20_000_000, 50_000_000,
        100_000_000, 200_000_000, 500_000_000,
        1_000_000_000, 2_000_000_000, 5_000_000_000, 10_000_000_000,
    )


def test_one_event_whole_record() -> None:
    #   BASE                                                  +1s
    #   |------------------------------------------------------|
    #        [==========)                                          read ok 4 KiB, 100..300 ms
    # 200 ms latency: 200 ms is a bound, bounds are exclusive, so bin 14 = [200 ms, 500 ms).
    events = [ev("read", "ok", t(100), t(300))]
    expected = {
        "volume_id": "vol-1", "tenant_id": "t-1",
        "window_start_ns": BASE, "window_length_ns": 1_000_000_000,
        "read_ios": 1, "read_bytes": 4096, "read_ios_error": 0, "invalid_read_ios": 0,
        "total_read_time_ns": 200_000_000, "avg_read_latency_ns": 200_000_000.0,
        "min_read_latency_ns": 200_000_000, "max_read_latency_ns": 200_000_000,
        "read_latency_histogram": [0] * 14 + [1] + [0] * 5,
        "read_latency_exp": {"offset": 882, "counts": [1], "zero": 0},
        # One latency: each percentile is its bucket's representative clamped to [min, max].
        "p50_read_latency_ns": 200_000_000, "p90_read_latency_ns": 200_000_000,
        "p99_read_latency_ns": 200_000_000, "p99_9_read_latency_ns": 200_000_000,
        "read_inflight_time_ns": 200_000_000, "avg_read_queue_depth": 0.2,
        "write_ios": 0, "write_bytes": 0, "write_ios_error": 0, "invalid_write_ios": 0,
        "total_write_time_ns": 0, "avg_write_latency_ns": None,
        "min_write_latency_ns": None, "max_write_latency_ns": None,
        "write_latency_histogram": [0] * 20,
        "write_latency_exp": {"offset": 0, "counts": [], "zero": 0},
        "p50_write_latency_ns": None, "p90_write_latency_ns": None,
        "p99_write_latency_ns": None, "p99_9_write_latency_ns": None,
        "write_inflight_time_ns": 0, "avg_write_queue_depth": 0.0,
        "flush_ios": 0, "flush_ios_error": 0, "invalid_flush_ios": 0,
        "total_flush_time_ns": 0, "avg_flush_latency_ns": None,
        "min_flush_latency_ns": None, "max_flush_latency_ns": None,
        "flush_latency_histogram": [0] * 20,
        "flush_latency_exp": {"offset": 0, "counts": [], "zero": 0},
        "p50_flush_latency_ns": None, "p90_flush_latency_ns": None,
        "p99_flush_latency_ns": None, "p99_9_flush_latency_ns": None,
        "flush_inflight_time_ns": 0, "avg_flush_queue_depth": 0.0,
        "discard_ios": 0, "discard_bytes": 0, "discard_ios_error": 0,
        "invalid_discard_ios": 0, "total_discard_time_ns": 0,
        "avg_discard_latency_ns": None,
        "min_discard_latency_ns": None, "max_discard_latency_ns": None,
        "discard_latency_histogram": [0] * 20,
        "discard_latency_exp": {"offset": 0, "counts": [], "zero": 0},
        "p50_discard_latency_ns": None, "p90_discard_latency_ns": None,
        "p99_discard_latency_ns": None, "p99_9_discard_latency_ns": None,
        "discard_inflight_time_ns": 0, "avg_discard_queue_depth": 0.0,
        "busy_time_ns": 200_000_000, "idle_time_ns": 800_000_000, "util": 0.2,
    }
    assert windows_oracle(events, S) == {("vol-1", BASE): expected}
    assert len(expected) == 70 and "flush_bytes" not in expected
    assert quiet(BASE).keys() == expected.keys()


# ---------------------------------------------------------------------------------------------
# Hand-computed windows: (events, window length, the exact expected windows)

CASES = [
    pytest.param(
        #   BASE          +1s           +2s
        #   |-------------|-------------|
        #     [==)                         read ok 100..300 ms, 200 ms -> bin 14
        #                     [)           write ok 1500..1502 ms, 2 ms -> bin 8 [2 ms, 5 ms)
        [ev("read", "ok", t(100), t(300)), ev("write", "ok", t(1500), t(1502), nbytes=8192)],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 200 * MS,
                "avg_read_latency_ns": 200_000_000.0, "min_read_latency_ns": 200 * MS,
                "max_read_latency_ns": 200 * MS, "read_latency_histogram": hist(14),
                **timed("read", 200 * MS), "read_inflight_time_ns": 200 * MS,
                "avg_read_queue_depth": 0.2,
                "busy_time_ns": 200 * MS, "idle_time_ns": 800 * MS, "util": 0.2},
            ("vol-1", BASE + S): quiet(BASE + S) | {
                "write_ios": 1, "write_bytes": 8192, "total_write_time_ns": 2 * MS,
                "avg_write_latency_ns": 2_000_000.0, "min_write_latency_ns": 2 * MS,
                "max_write_latency_ns": 2 * MS, "write_latency_histogram": hist(8),
                **timed("write", 2 * MS), "write_inflight_time_ns": 2 * MS,
                "avg_write_queue_depth": 0.002,
                "busy_time_ns": 2 * MS, "idle_time_ns": 998 * MS, "util": 0.002},
        },
        id="two-windows",
    ),
    pytest.param(
        #   BASE          +1s           +2s           +3s
        #   |-------------|-------------|-------------|
        #          [======================)              write ok 500..2500 ms
        # In flight 0.5 s, 1 s, 0.5 s; the middle window exists with no completion at all.
        # 2 s latency: bin 17 = [2 s, 5 s).
        [ev("write", "ok", t(500), t(2500))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "write_inflight_time_ns": 500 * MS, "avg_write_queue_depth": 0.5,
                "busy_time_ns": 500 * MS, "idle_time_ns": 500 * MS, "util": 0.5},
            ("vol-1", BASE + S): quiet(BASE + S) | {
                "write_inflight_time_ns": S, "avg_write_queue_depth": 1.0,
                "busy_time_ns": S, "idle_time_ns": 0, "util": 1.0},
            ("vol-1", BASE + 2 * S): quiet(BASE + 2 * S) | {
                "write_ios": 1, "write_bytes": 4096, "total_write_time_ns": 2 * S,
                "avg_write_latency_ns": 2_000_000_000.0, "min_write_latency_ns": 2 * S,
                "max_write_latency_ns": 2 * S, "write_latency_histogram": hist(17),
                **timed("write", 2 * S), "write_inflight_time_ns": 500 * MS,
                "avg_write_queue_depth": 0.5,
                "busy_time_ns": 500 * MS, "idle_time_ns": 500 * MS, "util": 0.5},
        },
        id="spans-three-windows",
    ),
    pytest.param(
        #   BASE                                        +60s
        #   |--------------------------------------------|
        #     [=)                                            write ok 500..2500 ms
        # The same request in one 60 s window: depth and util are 2 s / 60 s.
        [ev("write", "ok", t(500), t(2500))],
        MINUTE,
        {
            ("vol-1", BASE): quiet(BASE, MINUTE) | {
                "write_ios": 1, "write_bytes": 4096, "total_write_time_ns": 2 * S,
                "avg_write_latency_ns": 2_000_000_000.0, "min_write_latency_ns": 2 * S,
                "max_write_latency_ns": 2 * S, "write_latency_histogram": hist(17),
                **timed("write", 2 * S), "write_inflight_time_ns": 2 * S,
                "avg_write_queue_depth": 1 / 30,
                "busy_time_ns": 2 * S, "idle_time_ns": 58 * S, "util": 1 / 30},
        },
        id="spans-three-seconds-inside-one-minute",
    ),
    pytest.param(
        #   BASE                                          +1s
        #   |---------------------------------------------|
        #       [A=================)                          read ok 100..500 ms
        #                 [B==================)               read ok 300..700 ms
        #           [C=======)                                write failed 200..400 ms
        # busy = union = 100..700 ms = 600 ms; in flight: read 800 ms, write 200 ms (sum 1 s).
        # 400 ms and 200 ms latencies are both in bin 14 = [200 ms, 500 ms).
        [ev("read", "ok", t(100), t(500)), ev("read", "ok", t(300), t(700)),
         ev("write", "failed", t(200), t(400))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "read_ios": 2, "read_bytes": 8192, "total_read_time_ns": 800 * MS,
                "avg_read_latency_ns": 400_000_000.0, "min_read_latency_ns": 400 * MS,
                "max_read_latency_ns": 400 * MS, "read_latency_histogram": hist(14, 14),
                **timed("read", 400 * MS, 2), "read_inflight_time_ns": 800 * MS,
                "avg_read_queue_depth": 0.8,
                "write_ios_error": 1, "total_write_time_ns": 200 * MS,
                "avg_write_latency_ns": 200_000_000.0, "min_write_latency_ns": 200 * MS,
                "max_write_latency_ns": 200 * MS, "write_latency_histogram": hist(14),
                **timed("write", 200 * MS), "write_inflight_time_ns": 200 * MS,
                "avg_write_queue_depth": 0.2,
                "busy_time_ns": 600 * MS, "idle_time_ns": 400 * MS, "util": 0.6},
        },
        id="overlap-union-vs-sum",
    ),
    pytest.param(
        #   BASE                                          +1s
        #   |---------------------------------------------|
        #     [==)            [======)                        flush ok 100..200, 500..800 ms
        # Disjoint intervals: the union is the plain sum, 100 + 300 = 400 ms.
        # 100 ms -> bin 13 [100 ms, 200 ms), 300 ms -> bin 14; p50 rank 1 -> 200 ms,
        # p90 rank 2 -> 500 ms.
        [ev("flush", "ok", t(100), t(200)), ev("flush", "ok", t(500), t(800))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "flush_ios": 2, "total_flush_time_ns": 400 * MS,
                "avg_flush_latency_ns": 200_000_000.0, "min_flush_latency_ns": 100 * MS,
                "max_flush_latency_ns": 300 * MS, "flush_latency_histogram": hist(13, 14),
                **two_latencies("flush"),
                "flush_inflight_time_ns": 400 * MS, "avg_flush_queue_depth": 0.4,
                "busy_time_ns": 400 * MS, "idle_time_ns": 600 * MS, "util": 0.4},
        },
        id="disjoint-union-is-sum",
    ),
    pytest.param(
        #   BASE                    +1s
        #   |-----------------------|
        #               |                 read ok 500..500 ms: zero latency, empty interval
        # The window exists (a completion), but nothing was ever in flight.
        [ev("read", "ok", t(500), t(500))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 0,
                "avg_read_latency_ns": 0.0, "min_read_latency_ns": 0,
                "max_read_latency_ns": 0, "read_latency_histogram": hist(0),
                **timed("read", 0)},
        },
        id="zero-latency",
    ),
    pytest.param(
        #   BASE          +1s           +2s
        #   |-------------|-------------|
        #         [=======)                 read ok 500..1000 ms: completes ON the boundary
        # complete_ns = BASE+1s belongs to the second window, the interval only to the first:
        # the second window has the completion and no in-flight time.
        # 500 ms -> bin 15 = [500 ms, 1 s).
        [ev("read", "ok", t(500), t(1000))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "read_inflight_time_ns": 500 * MS, "avg_read_queue_depth": 0.5,
                "busy_time_ns": 500 * MS, "idle_time_ns": 500 * MS, "util": 0.5},
            ("vol-1", BASE + S): quiet(BASE + S) | {
                "read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 500 * MS,
                "avg_read_latency_ns": 500_000_000.0, "min_read_latency_ns": 500 * MS,
                "max_read_latency_ns": 500 * MS, "read_latency_histogram": hist(15),
                **timed("read", 500 * MS)},
        },
        id="completes-on-boundary",
    ),
    pytest.param(
        #   BASE          +1s           +2s
        #   |-------------|-------------|
        #                 [======)          read ok 1000..1500 ms: submitted ON the boundary
        # Nothing in the first window, so it does not exist.
        [ev("read", "ok", t(1000), t(1500))],
        S,
        {
            ("vol-1", BASE + S): quiet(BASE + S) | {
                "read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 500 * MS,
                "avg_read_latency_ns": 500_000_000.0, "min_read_latency_ns": 500 * MS,
                "max_read_latency_ns": 500 * MS, "read_latency_histogram": hist(15),
                **timed("read", 500 * MS), "read_inflight_time_ns": 500 * MS,
                "avg_read_queue_depth": 0.5,
                "busy_time_ns": 500 * MS, "idle_time_ns": 500 * MS, "util": 0.5},
        },
        id="submitted-on-boundary",
    ),
    pytest.param(
        #   BASE          +1s           +2s           +3s
        #   |-------------|-------------|-------------|
        #          [xxxxxxxxxxxxxxxxxxxxxx)              read invalid 500..2500 ms
        # Invalid: counted where it completes, no time, no histogram, no busy time, and its
        # interval creates no windows (only ok/failed requests are "in flight").
        [ev("read", "invalid", t(500), t(2500))],
        S,
        {("vol-1", BASE + 2 * S): quiet(BASE + 2 * S) | {"invalid_read_ios": 1}},
        id="invalid-counts-only",
    ),
    pytest.param(
        #   BASE                                          +1s
        #   |---------------------------------------------|
        #     [=========)                                     discard failed 100..300 ms
        #                    [xxxxxxxxxx)                     write invalid 400..600 ms
        # Failed adds time, histogram, depth and busy time (account_failed=on) but no bytes
        # and no ios; invalid adds only its counter.
        [ev("discard", "failed", t(100), t(300), nbytes=1 << 20),
         ev("write", "invalid", t(400), t(600))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "discard_ios_error": 1, "total_discard_time_ns": 200 * MS,
                "avg_discard_latency_ns": 200_000_000.0, "min_discard_latency_ns": 200 * MS,
                "max_discard_latency_ns": 200 * MS, "discard_latency_histogram": hist(14),
                **timed("discard", 200 * MS), "discard_inflight_time_ns": 200 * MS,
                "avg_discard_queue_depth": 0.2, "invalid_write_ios": 1,
                "busy_time_ns": 200 * MS, "idle_time_ns": 800 * MS, "util": 0.2},
        },
        id="failed-adds-time-invalid-does-not",
    ),
    pytest.param(
        #   BASE          +1s           +2s
        #   |-------------|-------------|
        #     [==)                          vol-1 read ok 100..300 ms
        #       [======)                    vol-2 read ok 200..600 ms (tenant t-2)
        # Volumes never share a window: each has its own busy time.
        [ev("read", "ok", t(100), t(300)),
         ev("read", "ok", t(200), t(600), volume_id="vol-2", tenant_id="t-2")],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 200 * MS,
                "avg_read_latency_ns": 200_000_000.0, "min_read_latency_ns": 200 * MS,
                "max_read_latency_ns": 200 * MS, "read_latency_histogram": hist(14),
                **timed("read", 200 * MS), "read_inflight_time_ns": 200 * MS,
                "avg_read_queue_depth": 0.2,
                "busy_time_ns": 200 * MS, "idle_time_ns": 800 * MS, "util": 0.2},
            ("vol-2", BASE): quiet(BASE, volume_id="vol-2", tenant_id="t-2") | {
                "read_ios": 1, "read_bytes": 4096, "total_read_time_ns": 400 * MS,
                "avg_read_latency_ns": 400_000_000.0, "min_read_latency_ns": 400 * MS,
                "max_read_latency_ns": 400 * MS, "read_latency_histogram": hist(14),
                **timed("read", 400 * MS), "read_inflight_time_ns": 400 * MS,
                "avg_read_queue_depth": 0.4,
                "busy_time_ns": 400 * MS, "idle_time_ns": 600 * MS, "util": 0.4},
        },
        id="volumes-apart",
    ),
    pytest.param(
        #   BASE                    +1s
        #   |-----------------------|
        #     [=============)             read ok 100..400 ms
        #        [====)                   read ok 150..250 ms, nested inside the first
        #           [============)        write ok 200..700 ms
        # busy = 100..700 ms = 600 ms; read in flight 300 + 100 = 400 ms; write 500 ms.
        # Latencies 300 ms, 100 ms -> bins 14 and 13; 500 ms -> bin 15.
        [ev("read", "ok", t(100), t(400)), ev("read", "ok", t(150), t(250)),
         ev("write", "ok", t(200), t(700))],
        S,
        {
            ("vol-1", BASE): quiet(BASE) | {
                "read_ios": 2, "read_bytes": 8192, "total_read_time_ns": 400 * MS,
                "avg_read_latency_ns": 200_000_000.0, "min_read_latency_ns": 100 * MS,
                "max_read_latency_ns": 300 * MS, "read_latency_histogram": hist(13, 14),
                **two_latencies("read"),
                "read_inflight_time_ns": 400 * MS, "avg_read_queue_depth": 0.4,
                "write_ios": 1, "write_bytes": 4096, "total_write_time_ns": 500 * MS,
                "avg_write_latency_ns": 500_000_000.0, "min_write_latency_ns": 500 * MS,
                "max_write_latency_ns": 500 * MS, "write_latency_histogram": hist(15),
                **timed("write", 500 * MS), "write_inflight_time_ns": 500 * MS,
                "avg_write_queue_depth": 0.5,
                "busy_time_ns": 600 * MS, "idle_time_ns": 400 * MS, "util": 0.6},
        },
        id="nested-and-chained",
    ),
]


@pytest.mark.parametrize(("events", "length", "expected"), CASES)
def test_windows_by_hand(events: list[dict], length: int, expected: dict) -> None:
    assert windows_oracle(events, length) == expected


# ---------------------------------------------------------------------------------------------
# Histogram bins: every boundary, from both sides


@pytest.mark.parametrize(("latency", "bin_index"), [
    (0, 0),                          # zero latency: the first bin
    (9_999, 0),                      # just under 10 us
    (10_000, 1),                     # exactly 10 us: upper bounds are exclusive
    (19_999, 1),                     # just under 20 us
    (20_000, 2),                     # exactly 20 us
    (49_999, 2),                     # just under 50 us
    (50_000, 3),                     # exactly 50 us
    (99_999, 3),                     # just under 100 us
    (100_000, 4),                    # exactly 100 us
    (199_999, 4),                    # just under 200 us
    (200_000, 5),                    # exactly 200 us
    (499_999, 5),                    # just under 500 us
    (500_000, 6),                    # exactly 500 us
    (999_999, 6),                    # just under 1 ms
    (1_000_000, 7),                  # exactly 1 ms
    (1_999_999, 7),                  # just under 2 ms
    (2_000_000, 8),                  # exactly 2 ms
    (4_999_999, 8),                  # just under 5 ms
    (5_000_000, 9),                  # exactly 5 ms
    (9_999_999, 9),                  # just under 10 ms
    (10_000_000, 10),                # exactly 10 ms
    (19_999_999, 10),                # just under 20 ms
    (20_000_000, 11),                # exactly 20 ms
    (49_999_999, 11),                # just under 50 ms
    (50_000_000, 12),                # exactly 50 ms
    (99_999_999, 12),                # just under 100 ms
    (100_000_000, 13),               # exactly 100 ms
    (199_999_999, 13),               # just under 200 ms
    (200_000_000, 14),               # exactly 200 ms
    (499_999_999, 14),               # just under 500 ms
    (500_000_000, 15),               # exactly 500 ms
    (999_999_999, 15),               # just under 1 s
    (1_000_000_000, 16),             # exactly 1 s
    (1_999_999_999, 16),             # just under 2 s
    (2_000_000_000, 17),             # exactly 2 s
    (4_999_999_999, 17),             # just under 5 s
    (5_000_000_000, 18),             # exactly 5 s
    (9_999_999_999, 18),             # just under 10 s
    (10_000_000_000, 19),            # exactly 10 s: the open last bin
    (10_000_000_001, 19),            # just over 10 s
    (59_000_000_000, 19),            # 59 s, still the open bin
])
def test_histogram_boundaries(latency: int, bin_index: int) -> None:
    # One read submitted at BASE, completing inside the first hour; look at its hour window.
    [row] = windows_oracle([ev("read", "ok", BASE, BASE + latency)], HOUR).values()
    assert row["read_latency_histogram"] == hist(bin_index)
    # One event: every percentile is its bucket's representative clamped to [min, max],
    # that is the latency itself (no longer the 20-bin upper bound).
    assert row | pct("read", latency) == row


def test_percentiles_are_representatives_clamped_to_min_max() -> None:
    #   BASE                                                   +60s
    #   |-------------------------------------------------------|
    #   [==============)                                          write ok 0..11 s (bin 19)
    #   [=======================================)                 write ok 0..30 s (bin 19)
    #   [)                                                        write ok 0..1 us (bin 0)
    # n = 3: p50 rank 2 -> 11 s's bucket 1067 (2**1067 < 11e9**32 <= 2**1068), its
    # representative 2**(2135/64) = 11,019,769,528.15...; p90..p99.9 rank 3 -> 30 s's
    # bucket 1113, representative 29,847,168,018.9... (below the max: not clamped).
    events = [ev("write", "ok", BASE, BASE + 11 * S), ev("write", "ok", BASE, BASE + 30 * S),
              ev("write", "ok", BASE, BASE + 1 * US)]
    [row] = windows_oracle(events, MINUTE).values()
    assert 2**1067 < (11 * S) ** 32 <= 2**1068 and 2**1113 < (30 * S) ** 32 <= 2**1114
    assert row["write_latency_histogram"] == hist(0, 19, 19)
    assert row["max_write_latency_ns"] == 30 * S
    assert row["write_latency_exp"]["offset"] == 318  # 1 us: 2**318 < 1000**32 <= 2**319
    assert row["write_latency_exp"]["counts"][1067 - 318] == 1
    assert row["write_latency_exp"]["counts"][-1] == 1
    assert len(row["write_latency_exp"]["counts"]) == 1113 - 318 + 1
    assert sum(row["write_latency_exp"]["counts"]) == 3
    assert row["p50_write_latency_ns"] == 11_019_769_528
    assert row["p90_write_latency_ns"] == row["p99_9_write_latency_ns"] == 29_847_168_019
    assert row["busy_time_ns"] == 30 * S
    assert row["write_inflight_time_ns"] == 41 * S + 1 * US


# ---------------------------------------------------------------------------------------------
# Percentile ranks, exact integer ceil(q * n)

B0, B3, B5, B19 = 0, 3, 5, 19


def counts(*pairs: tuple[int, int]) -> list[int]:
    """A histogram from (bin, count) pairs."""
    histogram = [0] * 20
    for index, count in pairs:
        histogram[index] += count
    return histogram


@pytest.mark.parametrize(("histogram", "num", "den", "max_ns", "expected"), [
    # nothing -> None
    (counts(), 50, 100, None, None),
    # n = 1: every q lands on the only event's bin
    (counts((B3, 1)), 999, 1000, 60_000, 100_000),
    # n = 2, p50: rank 1 -> the first bin
    (counts((B0, 1), (B3, 1)), 50, 100, 60_000, 10_000),
    # n = 3, p50: rank ceil(1.5) = 2 -> the second event's bin
    (counts((B0, 1), (B3, 1), (B5, 1)), 50, 100, 300_000, 100_000),
    # n = 10, p90: rank 9 -> still bin 3
    (counts((B3, 9), (B5, 1)), 90, 100, 300_000, 100_000),
    # n = 10, p99: rank ceil(9.9) = 10 -> bin 5
    (counts((B3, 9), (B5, 1)), 99, 100, 300_000, 500_000),
    # n = 100, p99: rank 99 -> bin 3
    (counts((B3, 99), (B5, 1)), 99, 100, 300_000, 100_000),
    # n = 100, p99.9: rank ceil(99.9) = 100 -> bin 5
    (counts((B3, 99), (B5, 1)), 999, 1000, 300_000, 500_000),
    # n = 1000, p99.9: rank exactly 999 -> bin 0 (rank 1000 would say the 20 s max)
    (counts((B0, 999), (B19, 1)), 999, 1000, 20 * S, 10_000),
    # n = 1000, p99: rank 990 -> bin 0
    (counts((B0, 999), (B19, 1)), 99, 100, 20 * S, 10_000),
    # n = 1001, p99.9: rank ceil(999.999) = 1000 -> bin 0 holds 1000, so bin 0
    (counts((B0, 1000), (B19, 1)), 999, 1000, 20 * S, 10_000),
    # n = 1001, p99.9: rank 1000, but bin 0 holds 999 -> the open bin -> the max
    (counts((B0, 999), (B19, 2)), 999, 1000, 20 * S, 20 * S),
    # n = 1000, p99.9 with 998 in bin 0: rank 999 falls in the open bin -> the max
    (counts((B0, 998), (B19, 2)), 999, 1000, 20 * S, 20 * S),
])
def test_percentile_ranks(histogram: list[int], num: int, den: int, max_ns: int | None,
                          expected: int | None) -> None:
    assert percentile_from_histogram(histogram, num, den, max_ns) == expected


@pytest.mark.parametrize(("n_fast", "n_slow", "p99_9"), [
    (999, 1, 1_000),  # n = 1000: rank 999, a fast one: 1 us's bucket, clamped up to the min
    (999, 2, 20 * S),  # n = 1001: rank 1000, a slow one: 20 s's bucket, clamped to the max
    (1000, 1, 1_000),  # n = 1001: rank 1000, the last fast one
])
def test_p99_9_rank_through_windows(n_fast: int, n_slow: int, p99_9: int) -> None:
    #   BASE                                                   +60s
    #   |-------------------------------------------------------|
    #     [) x n_fast                                             read ok 1 us each (bin 0)
    #     [=====================)  x n_slow                       read ok 20 s each (bin 19)
    # 1 us is in bucket 318, representative 991.26... < the min; 20 s in bucket 1095,
    # representative 20,210,346,425.0... > the max.
    events = [ev("read", "ok", t(100), t(100) + US) for _ in range(n_fast)]
    events += [ev("read", "ok", t(100), t(100) + 20 * S) for _ in range(n_slow)]
    [row] = windows_oracle(events, MINUTE).values()
    assert row["read_latency_histogram"] == counts((B0, n_fast), (B19, n_slow))
    exp = row["read_latency_exp"]
    assert (exp["offset"], exp["counts"][0], exp["counts"][-1]) == (318, n_fast, n_slow)
    assert row["p99_9_read_latency_ns"] == p99_9
    assert row["p50_read_latency_ns"] == 1_000


# ---------------------------------------------------------------------------------------------
# Helpers and rollup edge cases


@pytest.mark.parametrize(("intervals", "length"), [
    ([], 0),                                  # nothing
    ([(5, 5)], 0),                            # an empty interval
    ([(0, 10)], 10),                          # one
    ([(0, 10), (10, 20)], 20),                # touching: [0, 20)
    ([(0, 10), (11, 20)], 19),                # a 1 ns gap
    ([(0, 10), (2, 3)], 10),                  # nested
    ([(5, 15), (0, 10), (20, 30)], 25),       # unsorted, overlapping, then apart
])
def test_union_length(intervals: list[tuple[int, int]], length: int) -> None:
    assert union_length(intervals) == length


def test_rollup_refuses_lengths_that_do_not_tile() -> None:
    windows = windows_oracle([ev("read", "ok", t(0), t(10))], 7 * S)
    with pytest.raises(ValueError):
        rollup_oracle(windows, MINUTE)


def test_rollup_of_a_long_request() -> None:
    #   BASE    +1s     +2s    ...   +59s    +60s    +61s
    #   |-------|-------|--- ... ---|-------|-------|
    #       [===========================================)     read ok 0.5 s .. 60.5 s
    # Sixty one-second windows plus one: the minute holds 59.5 s of it, the next 0.5 s.
    events = [ev("read", "ok", t(500), t(60_500))]
    seconds = windows_oracle(events, S)
    assert len(seconds) == 61
    minutes = rollup_oracle(seconds, MINUTE)
    assert minutes == windows_oracle(events, MINUTE)
    assert minutes[("vol-1", BASE)]["busy_time_ns"] == 59_500 * MS
    assert minutes[("vol-1", BASE)]["read_ios"] == 0
    assert minutes[("vol-1", BASE + MINUTE)]["busy_time_ns"] == 500 * MS
    assert minutes[("vol-1", BASE + MINUTE)]["read_ios"] == 1


# ---------------------------------------------------------------------------------------------
# Properties on random events

VOLUMES = ("vol-1", "vol-2", "vol-3")
SPAN_NS = 2 * HOUR + 5 * MINUTE


@st.composite
def events_strategy(draw: st.DrawFn) -> dict:
    volume = draw(st.sampled_from(VOLUMES))
    op = draw(st.sampled_from(OPS))
    status = draw(st.sampled_from(("ok", "ok", "failed", "invalid")))
    submit = BASE - 30 * S + draw(st.one_of(
        st.integers(0, SPAN_NS),
        st.integers(0, SPAN_NS // S).map(lambda k: k * S),  # exactly on a second boundary
    ))
    latency = draw(st.one_of(
        st.just(0),
        st.integers(0, 2 * MS),
        st.integers(0, 3 * S),
        st.integers(0, 90 * S),
        st.sampled_from(HISTOGRAM_BOUNDS_NS),
    ))
    return ev(op, status, submit, submit + latency, nbytes=draw(st.integers(0, 1 << 20)),
              volume_id=volume, tenant_id="t-" + volume)


EVENT_LISTS = st.lists(events_strategy(), max_size=40)
LENGTHS = (S, MINUTE, HOUR)


def check_invariants(events: list[dict]) -> None:
    timed = [e for e in events if e["status"] in ("ok", "failed")]
    for length in LENGTHS:
        windows = windows_oracle(events, length)
        # Every event lands in exactly one window of each length.
        landed = sum(w[f"{op}_ios"] + w[f"{op}_ios_error"] + w[f"invalid_{op}_ios"]
                     for w in windows.values() for op in OPS)
        assert landed == len(events)
        for op in OPS:
            # All in-flight time is found, in some window, exactly once.
            inflight = sum(w[f"{op}_inflight_time_ns"] for w in windows.values())
            latencies = sum(e["complete_ns"] - e["submit_ns"] for e in timed if e["op"] == op)
            assert inflight == latencies
            assert sum(w[f"total_{op}_time_ns"] for w in windows.values()) == latencies
        for (vol, start), w in windows.items():
            assert start % length == 0 and w["window_length_ns"] == length
            assert w["volume_id"] == vol and w["tenant_id"] == "t-" + vol
            all_inflight = sum(w[f"{op}_inflight_time_ns"] for op in OPS)
            assert 0 <= w["busy_time_ns"] <= length
            assert w["busy_time_ns"] <= all_inflight
            assert w["idle_time_ns"] + w["busy_time_ns"] == length
            assert 0.0 <= w["util"] <= 1.0
            # Only windows with activity exist.
            completions = sum(w[f"{op}_ios"] + w[f"{op}_ios_error"] + w[f"invalid_{op}_ios"]
                              for op in OPS)
            assert completions > 0 or all_inflight > 0
        for vol in VOLUMES:
            # Busy time per window adds up to the volume's whole union of intervals.
            union = union_length([(e["submit_ns"], e["complete_ns"])
                                  for e in timed if e["volume_id"] == vol])
            assert sum(w["busy_time_ns"] for (v, _), w in windows.items() if v == vol) == union


@settings(max_examples=150, deadline=None)
@given(EVENT_LISTS)
def test_conservation_properties(events: list[dict]) -> None:
    check_invariants(events)


@settings(max_examples=150, deadline=None)
@given(EVENT_LISTS)
def test_rollups_equal_direct_windows(events: list[dict]) -> None:
    seconds = windows_oracle(events, S)
    minutes = windows_oracle(events, MINUTE)
    hours = windows_oracle(events, HOUR)
    assert rollup_oracle(seconds, MINUTE) == minutes
    assert rollup_oracle(minutes, HOUR) == hours
    assert rollup_oracle(seconds, HOUR) == hours


def test_twenty_thousand_events() -> None:
    """The oracle's intended size: 20,000 events, three lengths, rollups, all invariants."""
    rng = random.Random(20_000)
    events = []
    for _ in range(20_000):
        volume = rng.choice(VOLUMES + ("vol-4", "vol-5"))
        submit = BASE + rng.randrange(2 * HOUR)
        latency = rng.choice((0, rng.randrange(2 * MS), rng.randrange(S),
                              rng.randrange(15 * S)))
        events.append(ev(rng.choice(OPS), rng.choice(("ok", "ok", "failed", "invalid")),
                         submit, submit + latency, volume_id=volume, tenant_id="t-" + volume))
    seconds = windows_oracle(events, S)
    minutes = windows_oracle(events, MINUTE)
    assert rollup_oracle(seconds, MINUTE) == minutes
    assert rollup_oracle(minutes, HOUR) == windows_oracle(events, HOUR)
    landed = sum(w[f"{op}_ios"] + w[f"{op}_ios_error"] + w[f"invalid_{op}_ios"]
                 for w in seconds.values() for op in OPS)
    assert landed == 20_000
