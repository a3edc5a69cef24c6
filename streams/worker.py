"""`ioacct worker`: one Faust worker process of the accounting consumer group."""

from __future__ import annotations

import asyncio
import logging
import sys

import faust
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.kafka.topics import ensure_topics
from streams.pipeline.app import build_app


class Worker(faust.Worker):
    """faust's worker without its terminal spinner. At a log level of WARNING or above
    faust hangs a spinner handler on the root logger and sets the root logger to DEBUG, so
    every debug call in faust and aiokafka (several per message sent) built a log record:
    about 7 % of the bench's worker (docs/performance.md)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Create missing topics, then run the worker until SIGINT/SIGTERM. Kafka unreachable
    for ``kafka_wait_s`` at the start: a clear error and exit status 1, nothing started."""
    # Until faust sets up logging: the retries' warnings on stderr, as faust's look.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"))
    logging.getLogger().addHandler(handler)
    try:
        asyncio.run(ensure_topics(settings, settings.kafka_wait_s))
    except KafkaError as exc:
        print(f"ioacct worker: cannot reach Kafka at {settings.bootstrap_servers} "
              f"(retried for up to IOACCT_KAFKA_WAIT_S = {settings.kafka_wait_s:g} s): "
              f"{exc}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop
    pipeline = build_app(settings)
    worker = Worker(pipeline.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0
