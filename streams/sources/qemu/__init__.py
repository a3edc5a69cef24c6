"""QEMU as a source: its virtio-blk trace events paired into completions (``trace``),
the trace read live (``source``), reconciled with ``query-blockstats`` over QMP (``qmp``,
``summary``), and a small guest VM to drive it (``guest``)."""
