"""The kill-to-caught-up definition (streams/tools/bench/catchup.py) on made-up samples."""

from __future__ import annotations

from streams.tools.bench.catchup import Sample, describe, distribution, figures


def _samples(rows: list[tuple[float, int, int]]) -> list[Sample]:
    """(at, end, committed) of one partition, 0."""
    return [Sample(at, {0: end}, {0: committed}) for at, end, committed in rows]


def test_no_figures_without_samples_on_both_sides_of_the_kill() -> None:
    rows = [(float(t), 10, 10) for t in range(5)]
    assert figures(_samples(rows), kill_at=9.0, partitions=[0]).caught_up_s is None
    assert figures(_samples(rows), kill_at=-1.0, partitions=[0]).behind_before_s is None


def test_caught_up_needs_what_arrived_since_the_kill_too() -> None:
    # 10 records/s arrive; the kill at t=10; nothing commits until t=25, then the backlog.
    rows = [(t, 100 + 10 * t, 100 + 10 * t - 20) for t in range(0, 11)]
    rows += [(t, 100 + 10 * t, 180) for t in range(11, 25)]
    rows += [(25, 350, 260), (26, 360, 300), (27, 370, 340), (28, 380, 362), (29, 390, 380)]
    got = figures(_samples(rows), kill_at=10.0, partitions=[0], slack_s=4.0)
    assert got.resumed_s == 15.0  # first commit past 180
    assert got.all_at_kill_s == 15.0  # 260 >= 210, the end just after the kill
    # at 26: 300 < the end at 22 (320); at 27: 340 >= the end at 23 (330)
    assert got.caught_up_s == 17.0 and got.arrived == 370 - 210
    assert got.behind_before_s == 2.0  # 20 records behind at 10 records/s


def test_caught_up_means_back_as_far_behind_as_before_the_kill() -> None:
    # Before the kill the group was 6 s behind the head (more than the slack of 4 s).
    rows = [(t, 100 + 10 * t, max(0, 100 + 10 * (t - 6))) for t in range(0, 11)]
    rows += [(t, 100 + 10 * t, 140) for t in range(11, 20)]
    rows += [(t, 100 + 10 * t, 100 + 10 * (t - 6)) for t in range(20, 30)]
    got = figures(_samples(rows), kill_at=10.0, partitions=[0], slack_s=4.0)
    assert got.behind_before_s == 6.0 and got.caught_up_s == 10.0


def test_not_caught_up_while_the_commit_stays_behind() -> None:
    rows = [(t, 100 + 10 * t, 100 + 10 * t) for t in range(0, 6)]
    rows += [(t, 100 + 10 * t, 150) for t in range(6, 40)]
    got = figures(_samples(rows), kill_at=5.0, partitions=[0], slack_s=4.0)
    assert got.caught_up_s is None and got.resumed_s is None and got.all_at_kill_s is None


def test_every_partition_must_be_caught_up() -> None:
    samples = [Sample(float(t), {0: 10, 1: 10}, {0: 10, 1: 10 if t >= 7 else 5})
               for t in range(0, 10)]
    got = figures(samples, kill_at=2.0, partitions=[0, 1], slack_s=1.0)
    assert got.caught_up_s == 5.0
    # Nothing to do on partition 0: caught up at the first sample after the reference one.
    assert figures(samples, kill_at=2.0, partitions=[0], slack_s=1.0).caught_up_s == 2.0


def test_distribution_nearest_rank_p90() -> None:
    d = distribution([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0])
    assert (d["count"], d["min"], d["median"], d["p90"], d["max"]) == (11, 1.0, 6.0, 10.0, 11.0)
    assert distribution([2.0, 4.0])["median"] == 3.0
    assert distribution([]) == {"count": 0} and describe([]) == "none"
    assert describe([1.0]) == "1 kills: min 1.0 s, median 1.0 s, p90 1.0 s, max 1.0 s"


def test_the_failover_rows_say_whether_the_worst_kill_is_within_the_target() -> None:
    from streams.tools.bench.failover import failover_rows

    info = {"k": {"kills": [{"caught_up_s": 12.0}, {"caught_up_s": 27.5}], "target_s": 25.0,
                  "session_timeout_s": 15.0, "missed": 0, "resumed": {"median": 9.0},
                  "rate": 5000.0, "rate_basis": "fixed", "volumes": 50}}
    fig = {"k_caught_up_max_s": 27.5, "k_caught_up_median_s": 19.75, "k_caught_up_p90_s": 27.5,
           "k_caught_up_min_s": 12.0}
    rows = failover_rows(fig, info)
    assert "NOT met" in rows[0][2] and "12.0, 27.5 s" in rows[0][2]
    fig["k_caught_up_max_s"] = 24.0
    assert "met" in failover_rows(fig, info)[0][2] and "NOT" not in failover_rows(fig, info)[0][2]
    info["k"]["missed"] = 1  # a kill that never caught up is never "met"
    assert "NOT met" in failover_rows(fig, info)[0][2]
    assert failover_rows({}, info)[0][1] == "none"
