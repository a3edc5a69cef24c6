"""Kafka plumbing: the local KRaft broker the project runs, the pipeline's topics, and
retrying the worker's own admin calls while a broker is unreachable."""
