"""deploy/prometheus: the scrape configuration passes ``promtool check config``, the rules
``promtool check rules``, and every alert has cases in rules_test.yml that pass
``promtool test rules`` and fail when the alert is changed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from streams.config import REPO_ROOT

PROMETHEUS = REPO_ROOT / "deploy" / "prometheus"
RULES = (PROMETHEUS / "rules.yml").read_text()
ALERTS = re.findall(r"^\s+- alert: (\w+)$", RULES, re.M)


def _promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing (Debian package prometheus: make system-deps)"
    return subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True)


def test_scrape_configuration_checks(tmp_path: Path) -> None:
    token = tmp_path / "ioacct-operator.token"
    token.write_text("an operator token\n")
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/ioacct-operator.token" in config
    (tmp_path / "prometheus.yml").write_text(
        config.replace("/etc/prometheus/ioacct-operator.token", str(token)))
    shutil.copy(PROMETHEUS / "rules.yml", tmp_path)
    done = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "15 rules found" in done.stdout


def test_rules_pass_their_unit_tests() -> None:
    done = _promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_cases() -> None:
    cases = (PROMETHEUS / "rules_test.yml").read_text()
    assert len(ALERTS) == 8
    for alert in ALERTS:
        assert len(re.findall(rf"alertname: {alert}$", cases, re.M)) >= 2, alert


# One change per alert that breaks what it means: its tests must notice.
MUTATIONS = {
    "IoacctWorkerDown": ("up{job=\"ioacct-worker\"} == 0\n        for: 1m",
                         "up{job=\"ioacct-worker\"} == 0\n        for: 3m"),
    "IoacctConsumerLagGrowing": ("[5m])) > 0", "[5m])) >= 0"),
    "IoacctCommitStalled": ("commit_stalls_total[10m]) > 0", "commit_stalls_total[10m]) > 1"),
    "IoacctDeadLetters": ("events_rejected_total[5m]) > 0", "events_rejected_total[15m]) > 0"),
    "IoacctDeadLettersLost": ("dead_letters_failed_total[15m]) > 0",
                              "dead_letters_failed_total[15m]) > 2"),
    "IoacctWindowsClosingLate": ("p99_5m > 30", "p99_5m > 120"),
    "IoacctVolumeLatencyHigh": ("latency_seconds:p99_5m > 0.1\n",
                                "latency_seconds:p99_5m > 0.2\n"),
    "IoacctWorkerRecoveringLong": ("for: 10m\n        labels: {severity: ticket}\n"
                                   "        annotations:\n          summary: \"ioacct worker "
                                   "{{ $labels.instance }} has been recovering",
                                   "for: 20m\n        labels: {severity: ticket}\n"
                                   "        annotations:\n          summary: \"ioacct worker "
                                   "{{ $labels.instance }} has been recovering"),
}


@pytest.mark.parametrize("alert", sorted(MUTATIONS))
def test_a_changed_alert_fails_its_tests(alert: str, tmp_path: Path) -> None:
    old, new = MUTATIONS[alert]
    assert RULES.count(old) == 1, f"the mutation of {alert} no longer matches rules.yml"
    (tmp_path / "rules.yml").write_text(RULES.replace(old, new))
    shutil.copy(PROMETHEUS / "rules_test.yml", tmp_path)
    done = _promtool("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert done.returncode != 0 and alert in done.stdout + done.stderr, done.stdout


def test_mutations_cover_every_alert() -> None:
    assert sorted(MUTATIONS) == sorted(ALERTS)
