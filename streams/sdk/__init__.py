"""The hypervisor-side producer SDK: cheap per-event calls, batching per volume, and a
disk spool that holds records while Kafka is unreachable (DESIGN.md decision 5)."""
