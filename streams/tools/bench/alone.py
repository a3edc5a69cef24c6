"""One part of the bench run by itself (``python -m streams.tools.bench.steady`` or
``.failover``): a broker of its own on free ports (PLAINTEXT, a temporary state
directory), the part's run, its report rows printed, and its figures as JSON if asked."""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, Protocol

from streams.config import Settings
from streams.kafka import local as kafka_local
from streams.tools.bench.procs import free_port


class PartRun(Protocol):
    figures: dict[str, Any]
    info: dict[str, Any]


Rows = Callable[[dict[str, Any], dict[str, Any]], Iterable[tuple[str, str, str]]]


def run_alone(part: str, run: Callable[[Settings, Path], Coroutine[Any, Any, PartRun]],
              rows: Rows, json_path: str | None, logs: str | None, **overrides: Any) -> int:
    """Start a broker, ``run(settings, log_dir)``, stop it; print ``rows(figures,
    {part: info})``; write ``{"figures", "info"}`` to ``json_path`` if given."""
    state_dir = Path(tempfile.mkdtemp(prefix=f"ioacct-bench-{part}-"))
    base = Settings.from_env().with_overrides(
        kafka_port=free_port(), kafka_controller_port=free_port(), state_dir=state_dir,
        kafka_security="PLAINTEXT")
    base = base.with_overrides(bootstrap=f"127.0.0.1:{base.kafka_port}",
                               topic_prefix=f"b{part}", **overrides)
    log_dir = Path(logs or tempfile.mkdtemp(prefix=f"ioacct-bench-{part}-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    broker = kafka_local.LocalBroker.from_settings(base)
    try:
        kafka_local.start(broker)
        out: PartRun = asyncio.run(run(base, log_dir))
    finally:
        kafka_local.stop(broker)
        shutil.rmtree(state_dir, ignore_errors=True)
    for name, value, note in rows(out.figures, {part: out.info}):
        print(f"{name:<42}{value:>12}   {note}")
    if json_path:
        Path(json_path).write_text(json.dumps({"figures": out.figures, "info": out.info}))
    return 0
