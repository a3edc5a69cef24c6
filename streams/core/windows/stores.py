"""Typed views of a bytes table: the window entries, rollup parts, billing entries and
replay marks of one stage, each under a key prefix of its own.

A key is ``prefix + volume_id|start``. Windows, rollup parts and billing entries are
written packed (packed.py: a few dozen bytes where the compact JSON took hundreds); the JSON
the previous versions wrote still loads (a changelog written before), told by its first
byte. The replay marks stay compact JSON (one small value per volume).
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping

import orjson

from streams.core.billing import BillingEntry
from streams.core.counters import table_json
from streams.core.windows.acc import WindowAcc
from streams.core.windows.book import Part, WindowEntry, WindowKey
from streams.core.windows.packed import (
    is_packed,
    pack_billing,
    pack_entry,
    pack_part,
    unpack_billing,
    unpack_entry,
    unpack_part,
)

Table = MutableMapping[bytes, bytes]


class _Encoded(MutableMapping[WindowKey, object]):
    """A typed view of the table's keys under one prefix: (volume_id, start) -> value."""

    def __init__(self, table: Table, prefix: bytes) -> None:
        self.table = table
        self.prefix = prefix

    def _key(self, key: WindowKey) -> bytes:
        return b"%s%s|%d" % (self.prefix, key[0].encode(), key[1])

    def _decode_key(self, raw: bytes) -> WindowKey:
        volume, start = raw[len(self.prefix):].rsplit(b"|", 1)
        return volume.decode(), int(start)

    def encode(self, value: object) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> object:
        raise NotImplementedError

    def __getitem__(self, key: WindowKey) -> object:
        return self.decode(self.table[self._key(key)])

    def __setitem__(self, key: WindowKey, value: object) -> None:
        self.table[self._key(key)] = self.encode(value)

    def __delitem__(self, key: WindowKey) -> None:
        del self.table[self._key(key)]

    def __iter__(self) -> Iterator[WindowKey]:
        return (self._decode_key(k) for k in list(self.table) if k.startswith(self.prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)


class EntryStore(_Encoded):
    def encode(self, value: object) -> bytes:
        assert isinstance(value, WindowEntry)
        return pack_entry(value.tenant_id, value.acc, value.revision, value.emitted,
                          value.emitted_offset)

    def decode(self, data: bytes) -> WindowEntry:
        if is_packed(data):
            tenant, acc_, revision_, emitted_, offset_ = unpack_entry(data)
            return WindowEntry(tenant, acc_, revision_, emitted_, offset_)
        tenant_id, acc, revision, emitted, *offset = orjson.loads(data)  # older: no offset
        return WindowEntry(tenant_id, WindowAcc.from_list(acc), revision, emitted,
                           offset[0] if offset else -1)


class PartsStore(_Encoded):
    """A rollup's parts: (volume_id, part start) -> (revision, integers)."""

    def encode(self, value: object) -> bytes:
        assert isinstance(value, tuple)
        revision, acc = value
        return pack_part(revision, acc)

    def decode(self, data: bytes) -> Part:
        if is_packed(data):
            return unpack_part(data)
        revision, acc = orjson.loads(data)
        return revision, WindowAcc.from_list(acc)


class BillingStore(_Encoded):
    def encode(self, value: object) -> bytes:
        assert isinstance(value, BillingEntry)
        return pack_billing(value.tenant_id, value.counters, value.next_sequence,
                            value.unconfirmed)

    def decode(self, data: bytes) -> BillingEntry:
        if is_packed(data):
            return BillingEntry(*unpack_billing(data))
        tenant_id, counters, next_sequence, *unconfirmed = orjson.loads(data)  # older: none
        return BillingEntry(tenant_id, counters, next_sequence,
                            unconfirmed[0] if unconfirmed else [])


class SeqStore(_Encoded):
    """Per volume: the highest seq per producer whose events these windows and billing
    hours hold (key (volume_id, 0))."""

    def encode(self, value: object) -> bytes:
        assert isinstance(value, dict)
        return table_json(value)

    def decode(self, data: bytes) -> dict[str, int]:
        seqs: dict[str, int] = orjson.loads(data)
        return seqs
