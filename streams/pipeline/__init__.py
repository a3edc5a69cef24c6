"""The Faust app: topics, tables, agents, timers and publishing.

Agents are thin: they read a record, hand it to ``core`` (through ``guard``, which makes
each offset count once and in order), write the table and publish what came back.
"""
