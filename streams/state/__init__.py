"""Where a stage's state lives: a redo journal in front of a bytes table (a Faust table in
the worker, a dict in tests), so that each unit of writes lands all or none, and the
window stages of ``core`` opened over it.

A worker killed with -9 lands any prefix of a changelog's messages; the journal makes
that prefix whole units (``journal``). ``stages`` opens a partition's stages over a table
with their journals, and chains the three stages in one process for tests, the audit's
recomputation and the bench.
"""
