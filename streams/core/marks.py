"""The replay check, vectorised: many (group, seq) items in order against per-group marks.

Pure logic: no faust, no aiokafka. A group is a (volume, producer) pair; an item (a
record's part of a volume) is new when its seq is above the group's mark and every
earlier item's seq, which then becomes the mark (SEMANTICS.md: a replay changes nothing).
The counters (core/step.py) and the windows (windows/book.py) each judge a step's parts
with their own marks in one pass, replays within the step included.
"""

from __future__ import annotations

import numpy as np

from streams.core.sorting import stable_order


def judge_marks(group: np.ndarray, seq: np.ndarray, initial: np.ndarray,
                has_initial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per item (``group`` indexes ``initial``; items in their order): whether it is new,
    and whether its seq equals the mark it met (the last applied record, met again:
    a replay, or a conflict if its content differs). ``has_initial`` False: the group
    has no mark yet (below every seq). Exact for any int64 seq: only ranks are compared."""
    n, groups = len(seq), len(initial)
    if n == 0:
        return np.zeros(0, dtype=bool), np.zeros(0, dtype=bool)
    _, ranks = np.unique(np.concatenate((initial, seq)), return_inverse=True)
    ranks = ranks.astype(np.int64) + 1  # 0: no mark
    ranks[:groups][~has_initial] = 0
    # Each group's mark first, then its items in order; a running maximum of
    # group * span + rank never crosses groups, as groups ascend in this order.
    keys = np.concatenate((np.arange(groups, dtype=np.int64), group.astype(np.int64)))
    order = stable_order(keys)
    span = n + groups + 2
    running = np.maximum.accumulate(keys[order] * span + ranks[order])
    before = np.empty(n + groups, dtype=np.int64)
    before[order[1:]] = running[:-1]  # an item is never first: its group's mark precedes it
    met = before[groups:] - keys[groups:] * span
    mine = ranks[groups:]
    return mine > met, mine == met
