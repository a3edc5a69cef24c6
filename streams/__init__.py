"""ioacct: block I/O accounting on Apache Kafka (docs/architecture.md draws the data path).

Subpackages, innermost first; the arrows between them are import-linter contracts
(pyproject.toml, `make lint`):

- ``core``: pure logic (events, codec, counters, ingest, windows, billing, records);
  imports no faust, no aiokafka and no other subpackage.
- ``state``: how a stage's state lands in a table, all or none (the journal).
- ``kafka``: the local broker, the pipeline's topics, retrying Kafka calls.
- ``sdk``: the hypervisor-side producer (batching, spool).
- ``sources``: where events come from (simulator, fio, blkparse, QEMU).
- ``pipeline``: the Faust app and its agents; ``pipeline.guard`` makes delivery exact.
- ``api``: HTTP views, access gate, tokens, Prometheus text, the dashboard.
- ``audit``: replaying the raw topic and comparing with what was published.
- ``tools``: command-line verbs (produce, run, tail, bench); nothing imports them but cli.
- ``cli``, ``config``, ``worker``: the entry point, the settings, the composition root.
"""
