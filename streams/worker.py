"""`ioacct worker`: one Faust worker process of the accounting consumer group.

The composition root: the pipeline's app (``streams.pipeline``) with the web views
(``streams.api``) on it; neither of the two imports the other.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import tracemalloc

import faust
from aiokafka.errors import KafkaError

from streams.api.tls import server_context
from streams.api.tokens import TokenFeed
from streams.api.views import register_views
from streams.config import Settings
from streams.core.registry import mode_error
from streams.core.windows.warm import warm_up
from streams.kafka.topics import TopicsError, ensure_topics
from streams.pipeline.app import GC_THRESHOLDS, Pipeline, build_app


class Worker(faust.Worker):
    """faust's worker without its terminal spinner, whose root logger at DEBUG made every
    debug call in faust and aiokafka build a log record (docs/performance.md)."""

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    def _on_sigusr1(self) -> None:
        """With IOACCT_DEBUG_TRACEMALLOC_FRAMES: what Python holds, instead of mode's
        stack dump of every task."""
        if tracemalloc.is_tracing():
            log_tracemalloc_top()
        else:
            super()._on_sigusr1()


def build_worker(settings: Settings) -> tuple[Pipeline, TokenFeed]:
    """The pipeline's app with its web views, and the feed of the tokens they accept."""
    pipeline = build_app(settings)
    token_feed = TokenFeed(settings)

    @pipeline.app.task
    async def follow_tokens() -> None:
        """Tokens created or revoked reach every worker's views without a restart."""
        await token_feed.run()

    # Before the web server starts (faust's aiohttp site reads it): HTTPS when configured.
    pipeline.app.conf.web_ssl_context = server_context(settings)
    register_views(pipeline, token_feed)
    return pipeline, token_feed


TRACEMALLOC_TOP = 30  # tracebacks in one tracemalloc report
log = logging.getLogger(__name__)


def log_tracemalloc_top() -> None:
    """Log what Python holds now, the largest allocations first, grouped by traceback."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)])
    stats = snapshot.statistics("traceback")
    lines = [f"tracemalloc: {sum(s.size for s in stats):,} bytes in "
             f"{sum(s.count for s in stats):,} blocks; the top {TRACEMALLOC_TOP}:"]
    for stat in stats[:TRACEMALLOC_TOP]:
        lines.append(f"{stat.size:>14,} B {stat.count:>10,} blocks")
        lines += [f"    {line}" for line in stat.traceback.format(most_recent_first=True)]
    log.warning("\n".join(lines))


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    """Create missing topics, then run the worker until SIGINT/SIGTERM. Kafka unreachable
    for ``kafka_wait_s`` at the start: a clear error and exit status 1, nothing started."""
    reason = mode_error(settings.volume_registry)
    if reason is not None:
        print(f"ioacct worker: {reason}", file=sys.stderr)
        return 1
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
    except TopicsError as exc:  # settings the cluster cannot meet
        print(f"ioacct worker: {exc}", file=sys.stderr)
        return 1
    finally:
        logging.getLogger().removeHandler(handler)
    asyncio.set_event_loop(asyncio.new_event_loop())  # asyncio.run closed its loop
    if settings.debug_tracemalloc_frames > 0:
        tracemalloc.start(settings.debug_tracemalloc_frames)  # SIGUSR1: Worker._on_sigusr1
    seconds = warm_up()
    if seconds > 1:  # compiled, not loaded from numba's cache: once after an upgrade
        print(f"ioacct worker: compiled its loops in {seconds:.1f} s (cached for the next "
              f"start)", file=sys.stderr)
    pipeline, _ = build_worker(settings)
    gc.set_threshold(*GC_THRESHOLDS)
    worker = Worker(pipeline.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()
    return 0
