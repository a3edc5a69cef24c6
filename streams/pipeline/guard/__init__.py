"""Exact delivery on top of faust: every offset of an input processed once, in order, and
committed only after the outputs it made have been flushed.

faust can deliver a partition's records past a gap, twice after a rebalance, or ack a
record whose handler failed, and can commit before its changelog writes have left the
producer buffer. Before each record the agents (``pipeline.batches.admit``) ask
``order.check``, which drops repeats (``offsets.OffsetTracker``), and read the skipped
ranges themselves (``order.read_gap``, ``gap_reader``), acknowledging them in faust's
bookkeeping; ``faust_fixes`` makes faust's flush drain its buffer before a commit and
stops its own gap bookkeeping; an agent whose handler fails exits the worker without
committing (``pipeline.batches.batch_agent_over``); and the commit watch
(``offsets.CommitWatch``, ``pipeline.timers``) warns when a partition's commit is held.
"""
