"""The audit (SEMANTICS.md section 6): replay the raw topic over a time range with a fresh
consumer, recompute billing and windows, and compare with what was published."""
