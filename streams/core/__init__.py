"""Pure logic: every rule and number of SEMANTICS.md, with no I/O.

Events and their rules, one record's events as columns (batch), the Avro codec,
cumulative counters, ingest (one record to a volume's new state and its rejections),
windows, billing, monitoring records and record keys. Nothing here imports faust,
aiokafka or another ioacct subpackage (import-linter holds it to that), so every
function can be tested against the brute-force oracles.
"""
