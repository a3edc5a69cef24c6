"""Event-time windows (SEMANTICS.md sections 3 and 4), pure.

``acc``: the integers of one volume's window and the published record made from them;
``vector``: what many volumes' events add to their windows and billing hours, in one numpy
pass; ``book``: the watermark clock and the books of open and revisable windows, rollups;
``stages``: one partition's stages over a bytes table (the accounting stage, the 1 m and
1 h rollup stages), each public call a unit that lands all or none.
"""
