"""``ioacct bench --profile``: py-spy's raw stacks of the (c) worker, and the share of
samples per function in them."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path


def start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print(f"--profile: py-spy not found (pip install py-spy); {out} not written",
              file=sys.stderr)
        return None
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100",
                             "--format", "raw", "--nonblocking", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen[bytes] | None) -> None:
    if spy is None:
        return
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()


def summarize_profile(path: Path, top: int = 15) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares of the samples per function, from py-spy's raw output."""
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";")[1:] if f and not f.startswith("thread")]
        frames = [_short_frame(f) for f in frames]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            incl_counts[frame] += count
    if total == 0:
        return {"self": [], "inclusive": []}
    return {"self": [(f, n / total) for f, n in self_counts.most_common(top)],
            "inclusive": [(f, n / total) for f, n in incl_counts.most_common(top * 3)]}


def _short_frame(frame: str) -> str:
    """'add_events (streams/core/windows/acc.py:112)' -> 'add_events (windows/acc.py)'."""
    name, _, where = frame.partition(" (")
    filename = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) > 1 and parts[-2] != "streams" else Path(
        filename).name
    return f"{name} ({short})"
