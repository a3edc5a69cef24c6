"""Command-line verbs that drive the pipeline from outside: ``produce``, ``run``,
``tail`` and ``bench``. Only ``streams.cli`` imports them."""
