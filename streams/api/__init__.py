"""What people and Prometheus see: HTTP views, the access gate and its tokens, the
Prometheus text and the dashboard's assets (``static/``).

The views read a worker's state through the small interface they declare; they do not
import ``pipeline`` (the worker composes the two).
"""
