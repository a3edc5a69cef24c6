"""`ioacct bench` (`make bench`): throughput, latency and memory figures, with anchors
measured in the same run (docs/performance.md)."""
