"""`ioacct worker`: one Faust worker process of the accounting consumer group."""

from __future__ import annotations

import asyncio

import faust

from .app import build_app
from .config import Settings
from .topics import ensure_topics


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Create missing topics, then run the worker until SIGINT/SIGTERM."""
    asyncio.run(ensure_topics(settings))
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop
    pipeline = build_app(settings)
    worker = faust.Worker(pipeline.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0
