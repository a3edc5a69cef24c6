"""Real fio runs for the tests, through deploy/run-fio.sh (so the script is what is tested).

A missing fio is a failure with the command that installs it, never a skip. Trim needs a
target that can discard: this fio (3.33) trims only block devices (BLKDISCARD; a regular
file gives ENOTTY), so when the temporary directory cannot, a loop device over a file in
it is used if we may create one (root and losetup); otherwise trim is reported as not
supported here, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.config import REPO_ROOT

RUN_FIO = REPO_ROOT / "deploy" / "run-fio.sh"
INSTALL_HINT = "fio is not installed: run `bash deploy/debian-packages.sh fio` (as root)"


@dataclass
class FioRun:
    lat_log: Path
    json_path: Path
    report: dict[str, Any]

    @property
    def job(self) -> dict[str, Any]:
        jobs = self.report["jobs"]
        assert len(jobs) == 1 and jobs[0]["error"] == 0, jobs
        return dict(jobs[0])


def require_fio() -> str:
    path = shutil.which("fio")
    assert path is not None, INSTALL_HINT
    return path


def run_fio(out_dir: Path, *job: str, ios: int = 2000, direct: int = 1) -> FioRun:
    require_fio()
    name = "mix" if not job or job[0] == "mixed" else job[0]
    env = {**os.environ, "FIO_IOS": str(ios), "FIO_DIRECT": str(direct)}
    result = subprocess.run(["bash", str(RUN_FIO), str(out_dir), *job], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    json_path = out_dir / f"{name}.json"
    report = orjson.loads(json_path.read_bytes()) if json_path.exists() else {}
    assert result.returncode == 0, (
        f"fio failed ({result.returncode}): {result.stderr[-2000:]} {report.get('jobs')}")
    return FioRun(out_dir / f"{name}_lat.1.log", json_path, report)


def run_mixed(out_dir: Path) -> FioRun:
    """The mixed random read/write job; O_DIRECT, or buffered where the FS has no O_DIRECT."""
    try:
        return run_fio(out_dir, "mixed", direct=1)
    except AssertionError as exc:
        if "O_DIRECT" not in str(exc) and "Invalid argument" not in str(exc):
            raise
        return run_fio(out_dir, "mixed", direct=0)


def _can_trim(out_dir: Path, target: str) -> bool:
    probe = out_dir / "probe"
    probe.mkdir(exist_ok=True)
    env = {**os.environ, "FIO_IOS": "1"}
    result = subprocess.run(["bash", str(RUN_FIO), str(probe), "trim", target], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        return False
    job = orjson.loads((probe / "trim.json").read_bytes())["jobs"][0]
    return bool(job["error"] == 0 and job["trim"]["total_ios"] == 1)


@contextlib.contextmanager
def trim_target(out_dir: Path) -> Iterator[tuple[str | None, str]]:
    """(a path fio can trim, how) or (None, why not); a loop device is detached on exit."""
    require_fio()
    backing = out_dir / "trim.img"
    with open(backing, "wb") as f:
        f.truncate(16 << 20)
    if _can_trim(out_dir, str(backing)):
        yield str(backing), "a regular file in the temporary directory"
        return
    losetup = shutil.which("losetup")
    if os.geteuid() != 0 or losetup is None:
        yield None, ("fio cannot trim a regular file here and a loop device needs root and "
                     "losetup")
        return
    made = subprocess.run([losetup, "--find", "--show", str(backing)], capture_output=True,
                          text=True, check=False)
    if made.returncode != 0:
        yield None, f"losetup failed: {made.stderr.strip()}"
        return
    loop = made.stdout.strip()
    try:
        if _can_trim(out_dir, loop):
            yield loop, f"loop device {loop} over a file in the temporary directory"
        else:
            yield None, f"fio cannot trim the loop device {loop} either"
    finally:
        subprocess.run([losetup, "-d", loop], check=False)
