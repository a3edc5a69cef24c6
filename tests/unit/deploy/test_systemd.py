"""The systemd units in deploy/systemd: rendered by install.sh for this checkout, they pass
``systemd-analyze verify`` without a warning, and their environment files name only real
settings."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

from streams.config import REPO_ROOT, Settings

SYSTEMD = REPO_ROOT / "deploy" / "systemd"
# Read by the producer unit's command line, not by Settings.
UNIT_VARIABLES = {"IOACCT_QEMU_TRACE", "IOACCT_VOLUME_ID", "IOACCT_TENANT_ID"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("systemd")
    units, conf = root / "units", root / "conf"
    subprocess.run(["bash", str(SYSTEMD / "install.sh"), str(units), str(conf)], check=True,
                   capture_output=True)
    # An instance of the producer template, with its guest's environment file.
    template = (units / "ioacct-producer@.service").read_text()
    (units / "ioacct-producer@vm-1.service").write_text(template)
    shutil.copy(SYSTEMD / "producer.env.example", conf / "producer-vm-1.env")
    return units, conf


def _verify(*paths: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing (Debian package systemd)"
    return subprocess.run([analyze, "verify", *map(str, paths)], capture_output=True,
                          text=True)


def test_the_rendered_units_verify_cleanly(installed: tuple[Path, Path]) -> None:
    units, _ = installed
    done = _verify(units / "ioacct-worker.service", units / "ioacct-producer@vm-1.service")
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done.stderr


def test_verify_catches_what_a_typo_would_break(installed: tuple[Path, Path]) -> None:
    """The check above can fail: a wrong binary and an unknown key are both reported."""
    units, _ = installed
    worker = (units / "ioacct-worker.service").read_text()
    broken = units / "ioacct-broken.service"
    broken.write_text(worker.replace("Restart=always", "Restart=always\nRestartSecs=2")
                      .replace("/bin/ioacct worker", "/bin/ioacct-missing worker"))
    done = _verify(broken)
    assert done.returncode != 0
    assert "RestartSecs" in done.stderr and "ioacct-missing" in done.stderr


def test_units_run_this_checkouts_ioacct_with_its_verbs(installed: tuple[Path, Path]) -> None:
    units, conf = installed
    worker = (units / "ioacct-worker.service").read_text()
    producer = (units / "ioacct-producer@.service").read_text()
    assert f"ExecStart={REPO_ROOT}/.venv/bin/ioacct worker\n" in worker
    assert "ioacct produce --qemu-trace ${IOACCT_QEMU_TRACE} --follow" in producer
    assert f"EnvironmentFile={conf}/ioacct.env" in worker
    assert "@PREFIX@" not in worker + producer and "@CONFDIR@" not in worker + producer


@pytest.mark.parametrize("name", ["ioacct.env.example", "producer.env.example"])
def test_environment_files_name_only_real_settings(name: str) -> None:
    settings = {f"IOACCT_{f.name.upper()}" for f in fields(Settings)}
    names = re.findall(r"^(IOACCT_[A-Z0-9_]+)=", (SYSTEMD / name).read_text(), re.M)
    assert names, f"{name} sets nothing"
    unknown = set(names) - settings - UNIT_VARIABLES
    assert not unknown, f"{name} sets {sorted(unknown)}, which no setting reads"
