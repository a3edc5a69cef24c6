"""Per-token rate limits: one token bucket per token id (pure logic; the clock is passed in).

A bucket holds up to ``burst`` requests and refills at ``rate_per_s``; a request takes one.
An empty bucket answers how long until the next request may pass (the ``Retry-After`` of
a 429). Buckets are independent: one tenant's flood never slows another's requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """Sustained requests per second and the burst allowed above it."""

    rate_per_s: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError(f"a rate limit needs rate > 0 and burst >= 1, not {self}")


@dataclass
class _Bucket:
    tokens: float
    updated_s: float


class RateLimiter:
    """Token buckets by key (a token id); ``take`` decides one request."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._buckets: dict[str, _Bucket] = {}
        self._max_keys = max_keys  # bounds memory; only valid tokens ever get a bucket
        self.allowed = 0
        self.refused = 0

    def take(self, key: str, limit: Limit, now_s: float) -> float:
        """0.0 if the request may pass (and one token is taken), else the seconds to wait."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # a full table forgets everyone: errs towards allowing
            bucket = self._buckets[key] = _Bucket(float(limit.burst), now_s)
        elapsed_s = max(0.0, now_s - bucket.updated_s)  # a clock going back refills nothing
        bucket.tokens = min(float(limit.burst), bucket.tokens + elapsed_s * limit.rate_per_s)
        bucket.updated_s = max(bucket.updated_s, now_s)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            self.allowed += 1
            return 0.0
        self.refused += 1
        return (1.0 - bucket.tokens) / limit.rate_per_s

    def __len__(self) -> int:
        return len(self._buckets)


def retry_after_s(wait_s: float) -> str:
    """The Retry-After header's value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
