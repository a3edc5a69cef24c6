"""Exact delivery on top of faust: every offset of an input processed once, in order,
and committed only after the outputs it made have been flushed.

faust can deliver a partition's records past a gap, twice after a rebalance, or ack a
record whose handler failed; the guard reads the skipped ranges itself (``gap_reader``),
drops repeats (``offsets``), patches faust's commit bookkeeping (``faust_fixes``) and warns
when a partition's commit is held (``offsets.CommitWatch``).
"""
