"""Avro single-object encoding: round trips, the header, decode errors and schema evolution.

The fingerprint is checked against a CRC-64-AVRO (Rabin) and a Parsing Canonical Form written
here from the Avro specification, independently of fastavro.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.codec import HEADER_LEN, MAGIC, CodecError, SchemaSet

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
CURRENT_FILES = sorted(SCHEMA_DIR.glob("*.avsc"))
HISTORY_FILES = sorted(SCHEMA_DIR.glob("history/*.avsc"))
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
SCHEMAS = SchemaSet()


# --- an independent CRC-64-AVRO and Parsing Canonical Form (Avro specification) --------------

CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    fp = CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def canonical_form(schema: Any, namespace: str | None = None) -> str:
    """[PRIMITIVES] [FULLNAMES] [STRIP] [ORDER] [STRINGS] [WHITESPACE] of the specification."""
    text = lambda value: json.dumps(value, ensure_ascii=False)  # noqa: E731
    if isinstance(schema, str):
        return text(schema if schema in PRIMITIVES else _fullname(schema, namespace))
    if isinstance(schema, list):
        return "[" + ",".join(canonical_form(branch, namespace) for branch in schema) + "]"
    kind = schema["type"]
    if kind == "array":
        return '{"type":"array","items":' + canonical_form(schema["items"], namespace) + "}"
    if kind == "map":
        return '{"type":"map","values":' + canonical_form(schema["values"], namespace) + "}"
    if kind not in ("record", "error", "enum", "fixed"):
        return canonical_form(kind, namespace)
    name = _fullname(schema["name"], schema.get("namespace", namespace))
    head = f'{{"name":{text(name)},"type":{text(kind)}'
    if kind == "enum":
        return head + ',"symbols":[' + ",".join(map(text, schema["symbols"])) + "]}"
    if kind == "fixed":
        return head + f',"size":{int(schema["size"])}}}'
    inner = name.rpartition(".")[0] or None
    fields = ",".join(
        f'{{"name":{text(f["name"])},"type":{canonical_form(f["type"], inner)}}}'
        for f in schema["fields"]
    )
    return head + ',"fields":[' + fields + "]}"


def avro_fingerprint(schema: Any) -> bytes:
    """The 8 header bytes: CRC-64-AVRO of the canonical form, little-endian."""
    return crc64_avro(canonical_form(schema).encode()).to_bytes(8, "little")


def load_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@pytest.mark.parametrize(("canonical", "signed_fingerprint"), [
    # published in apache/avro share/test/data/schema-tests.txt, as signed 64-bit longs
    ('"null"', 7195948357588979594),
    ('"boolean"', -6970731678124411036),
    ('"int"', 8247732601305521295),
    ('"long"', -3434872931120570953),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"fixed","size":15}', 1756455273707447556),
    ('{"name":"foo","type":"record","fields":[{"name":"f1","type":"boolean"}]}',
     7843277075252814651),
    ('["int","boolean"]', 5392556393470105090),
    ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
])
def test_crc64_avro_matches_published_vectors(canonical: str, signed_fingerprint: int) -> None:
    assert crc64_avro(canonical.encode()) == signed_fingerprint % 2**64


@pytest.mark.parametrize(("schema", "canonical"), [
    ({"type": "null"}, '"null"'),  # a primitive written as an object
    ({"type": "fixed", "name": "foo", "size": 15}, '{"name":"foo","type":"fixed","size":15}'),
    # doc, default and namespace are stripped; names become full names; keys are ordered
    ({"type": "record", "namespace": "x.y", "name": "R", "doc": "d", "fields": [
        {"name": "e", "doc": "d", "default": "A",
         "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        {"name": "again", "type": "E"},
        {"name": "arr", "type": {"items": ["null", "long"], "type": "array"}}]},
     '{"name":"x.y.R","type":"record","fields":[{"name":"e","type":{"name":"x.y.E",'
     '"type":"enum","symbols":["A","B"]}},{"name":"again","type":"x.y.E"},'
     '{"name":"arr","type":{"type":"array","items":["null","long"]}}]}'),
])
def test_canonical_form_by_hand(schema: Any, canonical: str) -> None:
    assert canonical_form(schema) == canonical


@pytest.mark.parametrize("path", CURRENT_FILES, ids=lambda p: p.name)
def test_header_is_magic_and_little_endian_crc64_of_canonical_form(path: Path) -> None:
    schema = load_json(path)
    name = schema["name"].rsplit(".", 1)[-1]
    header = MAGIC + avro_fingerprint(schema)
    assert MAGIC == b"\xc3\x01" and HEADER_LEN == 10
    assert SCHEMAS.headers[name] == header
    record = sample_record(schema)
    assert SCHEMAS.encode(name, record)[:HEADER_LEN] == header


# --- round trips ----------------------------------------------------------------------------

int64 = st.integers(INT64_MIN, INT64_MAX)


@st.composite
def io_batches(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 40))
    column = st.lists(int64, min_size=n, max_size=n)
    return {
        "producer_id": draw(st.text(max_size=20)), "seq": draw(int64),
        "volume_id": draw(st.text(max_size=130)), "tenant_id": draw(st.text(max_size=20)),
        "host_id": draw(st.none() | st.text(max_size=20)),
        "op": draw(st.binary(min_size=n, max_size=n)),
        "status": draw(st.binary(min_size=n, max_size=n)),
        "offset": draw(column), "bytes": draw(column),
        "submit_ns": draw(column), "complete_ns": draw(column),
    }


dead_letters = st.fixed_dictionaries({
    "reason": st.text(), "source_topic": st.text(max_size=30),
    "source_partition": st.integers(-(2**31), 2**31 - 1), "source_offset": int64,
    "rejected_at_ns": int64, "events": int64,
    "volume_id": st.none() | st.text(max_size=20), "tenant_id": st.none() | st.text(max_size=20),
    "producer_id": st.none() | st.text(max_size=20), "seq": st.none() | int64,
    "event_index": st.none() | st.integers(-(2**31), 2**31 - 1),
    "event_json": st.none() | st.text(), "payload": st.none() | st.binary(),
    "payload_length": st.none() | int64,
    "payload_sha256": st.none() | st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    "event_indexes": st.lists(st.integers(0, 2**31 - 1), max_size=5),
    "event_reasons": st.lists(st.text(max_size=30), max_size=5),
})


@given(io_batches())
def test_io_batch_round_trips(batch: dict[str, Any]) -> None:
    payload = SCHEMAS.encode("IoBatch", batch)
    assert SCHEMAS.decode(payload) == ("IoBatch", batch)
    assert SCHEMAS.decode(payload, expect="IoBatch") == ("IoBatch", batch)


@given(dead_letters)
def test_dead_letter_round_trips(record: dict[str, Any]) -> None:
    payload = SCHEMAS.encode("DeadLetter", record)
    assert SCHEMAS.decode(payload, expect="DeadLetter") == ("DeadLetter", record)


def test_dead_letter_defaults_fill_missing_optional_fields() -> None:
    record = {"reason": "r", "source_topic": "t", "source_partition": 0, "source_offset": 1,
              "rejected_at_ns": 2, "events": 0}
    _, decoded = SCHEMAS.decode(SCHEMAS.encode("DeadLetter", record))
    assert decoded == {**record, "volume_id": None, "tenant_id": None, "producer_id": None,
                       "seq": None, "event_index": None, "event_json": None, "payload": None,
                       "payload_length": None, "payload_sha256": None, "event_indexes": [],
                       "event_reasons": []}


# --- decode errors --------------------------------------------------------------------------

BATCH = {
    "producer_id": "p-1", "seq": 7, "volume_id": "vol-1", "tenant_id": "t-1", "host_id": "h-1",
    "op": b"\x00\x01\x02", "status": b"\x00\x01\x02", "offset": [0, 4096, 0],
    "bytes": [4096, 512, 0], "submit_ns": [10, 20, -(2**40)], "complete_ns": [30, 2**40, 50],
}
DEAD = {
    "reason": "bytes -5 is negative", "source_topic": "ioacct.io.raw", "source_partition": 3,
    "source_offset": 1234567, "rejected_at_ns": 1_700_000_000 * 10**9, "events": 1,
    "volume_id": "vol-1", "tenant_id": "t-1", "producer_id": "p-1", "seq": 7,
    "event_index": 2, "event_json": '{"bytes":-5}', "payload": b"\xc3\x01abcdef",
}
GOOD_BATCH = SCHEMAS.encode("IoBatch", BATCH)
GOOD_DEAD = SCHEMAS.encode("DeadLetter", DEAD)


@pytest.mark.parametrize(("payload", "expect", "words"), [
    pytest.param(b"", None, "not Avro single-object encoded (0 bytes, header empty)",
                 id="empty payload"),
    pytest.param(b"\xc3", None, "not Avro single-object encoded (1 bytes", id="half a magic"),
    pytest.param(MAGIC + b"\x00" * 7, None, "not Avro single-object encoded (9 bytes",
                 id="short header"),
    pytest.param(b"\xc3\x02" + GOOD_BATCH[2:], None, "header c302", id="wrong format version"),
    pytest.param(b'{"volume_id": "vol-1"}', None, "header 7b22", id="JSON, not Avro"),
    pytest.param(random.Random(1).randbytes(200), None, "not Avro single-object",
                 id="random bytes"),
    pytest.param(MAGIC + b"\x00" * 8 + GOOD_BATCH[10:], None,
                 "unknown writer schema fingerprint 00", id="unknown fingerprint"),
    pytest.param(MAGIC + bytes(reversed(GOOD_BATCH[2:10])) + GOOD_BATCH[10:], None,
                 "unknown writer schema fingerprint", id="fingerprint in big-endian order"),
    pytest.param(GOOD_BATCH + b"\x00", None, "1 trailing bytes after the IoBatch body",
                 id="one trailing byte"),
    pytest.param(GOOD_DEAD + b"junk", None, "4 trailing bytes after the DeadLetter body",
                 id="trailing bytes"),
    pytest.param(GOOD_BATCH, "DeadLetter", "expected a DeadLetter record, got IoBatch",
                 id="IoBatch where a DeadLetter is expected"),
    pytest.param(GOOD_DEAD, "IoBatch", "expected a IoBatch record, got DeadLetter",
                 id="DeadLetter where an IoBatch is expected"),
    pytest.param(GOOD_BATCH[:HEADER_LEN], None, "undecodable IoBatch body",
                 id="header and no body"),
    pytest.param(GOOD_BATCH[:HEADER_LEN] + b"\xff" * 12, None, "undecodable IoBatch body",
                 id="varint longer than 64 bits"),
])
def test_decode_errors(payload: bytes, expect: str | None, words: str) -> None:
    with pytest.raises(CodecError) as info:
        SCHEMAS.decode(payload, expect=expect)
    assert words in str(info.value)


@pytest.mark.parametrize("payload", [GOOD_BATCH, GOOD_DEAD], ids=["IoBatch", "DeadLetter"])
def test_every_truncation_is_a_codec_error(payload: bytes) -> None:
    for length in range(len(payload)):
        with pytest.raises(CodecError):
            SCHEMAS.decode(payload[:length])


@settings(max_examples=300)
@given(st.sampled_from([GOOD_BATCH[:HEADER_LEN], GOOD_DEAD[:HEADER_LEN], b""]),
       st.binary(max_size=200))
def test_any_bytes_decode_or_raise_codec_error(header: bytes, body: bytes) -> None:
    try:
        name, record = SCHEMAS.decode(header + body)
    except CodecError as exc:
        assert str(exc)
    else:  # a lucky body is a real record (Avro varints are not canonical: no re-encode check)
        assert name in SCHEMAS.current and isinstance(record, dict)


@given(io_batches(), st.data())
def test_single_byte_corruption_is_detected_or_harmless(batch: dict[str, Any],
                                                         data: st.DataObject) -> None:
    payload = bytearray(SCHEMAS.encode("IoBatch", batch))
    i = data.draw(st.integers(0, len(payload) - 1))
    payload[i] ^= data.draw(st.integers(1, 255))
    try:
        SCHEMAS.decode(bytes(payload))
    except CodecError:
        pass


# --- schema evolution -----------------------------------------------------------------------

def sample_value(schema: Any, named: dict[str, Any], namespace: str | None = None) -> Any:
    """A default-ish value of any Avro schema (first non-null branch of a union)."""
    if isinstance(schema, list):
        branches = [b for b in schema if b != "null"] or ["null"]
        return sample_value(branches[0], named, namespace)
    if isinstance(schema, str):
        primitive = {"null": None, "boolean": True, "int": 1, "long": 2, "float": 0.5,
                     "double": 0.25, "bytes": b"\x00\x01", "string": "s"}
        if schema in primitive:
            return primitive[schema]
        return sample_value(named[_fullname(schema, namespace)], named, namespace)
    kind = schema["type"]
    if kind == "array":
        return [sample_value(schema["items"], named, namespace)]
    if kind == "map":
        return {"k": sample_value(schema["values"], named, namespace)}
    if kind not in ("record", "error", "enum", "fixed"):
        return sample_value(kind, named, namespace)
    fullname = _fullname(schema["name"], schema.get("namespace", namespace))
    named[fullname] = schema
    if kind == "enum":
        return schema["symbols"][0]
    if kind == "fixed":
        return b"\x00" * schema["size"]
    inner = fullname.rpartition(".")[0] or None
    return {f["name"]: sample_value(f["type"], named, inner) for f in schema["fields"]}


def sample_record(schema: dict[str, Any]) -> dict[str, Any]:
    return sample_value(schema, {})


def encode_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Single-object encode with an arbitrary (old) writer schema, header computed here."""
    buf = io.BytesIO()
    buf.write(MAGIC + avro_fingerprint(schema))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema, _write_hint=False), record)
    return buf.getvalue()


def record_name(schema: dict[str, Any]) -> str:
    return schema["name"].rsplit(".", 1)[-1]


def test_schema_dirs_are_not_empty() -> None:
    assert CURRENT_FILES and HISTORY_FILES


@pytest.mark.parametrize("path", CURRENT_FILES, ids=lambda p: p.name)
def test_current_schema_has_an_identical_history_version(path: Path) -> None:
    """Changing a schema without adding it to schemas/history/ fails here."""
    fingerprint = avro_fingerprint(load_json(path))
    history = {avro_fingerprint(load_json(p)): p.name for p in HISTORY_FILES}
    assert fingerprint in history, f"add schemas/history/{path.stem}.vN.avsc for {path.name}"
    assert history[fingerprint].startswith(path.stem + ".v")


@pytest.mark.parametrize("path", HISTORY_FILES, ids=lambda p: p.name)
def test_history_versions_are_distinct_and_named_after_a_current_schema(path: Path) -> None:
    stem, _, version = path.name.removesuffix(".avsc").rpartition(".v")
    assert version.isdigit() and (SCHEMA_DIR / f"{stem}.avsc").exists()
    same = [p for p in HISTORY_FILES if avro_fingerprint(load_json(p))
            == avro_fingerprint(load_json(path))]
    assert same == [path], "two history files hold the same version"


@pytest.mark.parametrize("path", HISTORY_FILES, ids=lambda p: p.name)
def test_every_history_version_decodes_with_the_current_reader(path: Path) -> None:
    """Avro backward compatibility: records of any old writer still decode."""
    writer = load_json(path)
    old_record = sample_record(writer)
    name, decoded = SCHEMAS.decode(encode_with(writer, old_record), expect=record_name(writer))
    assert name == record_name(writer)
    reader = SCHEMAS.current[name]
    assert set(decoded) == {f["name"] for f in reader["fields"]}
    unchanged = {f["name"] for f in writer["fields"]} & {f["name"] for f in reader["fields"]}
    for field in unchanged:
        if decoded[field] != old_record[field]:  # only a type promotion may change a value
            assert decoded[field] == pytest.approx(old_record[field])


def _evolved_dir(tmp_path: Path, path: Path, new_field: dict[str, Any]) -> Path:
    """A schema dir whose current ``path`` gained ``new_field``; history holds the old one."""
    shutil.copytree(SCHEMA_DIR, tmp_path / "schemas")
    schema = load_json(path)
    schema["fields"].append(new_field)
    (tmp_path / "schemas" / path.name).write_text(json.dumps(schema))
    return tmp_path / "schemas"


@pytest.mark.parametrize("path", CURRENT_FILES, ids=lambda p: p.name)
def test_new_required_field_makes_old_records_unreadable(tmp_path: Path, path: Path) -> None:
    """The guard itself: an incompatible change is detected, not silently accepted."""
    schema_dir = _evolved_dir(tmp_path, path, {"name": "zone_id", "type": "string"})
    old = load_json(path)
    with pytest.raises(CodecError, match="undecodable"):
        SchemaSet(schema_dir).decode(encode_with(old, sample_record(old)))


@pytest.mark.parametrize("path", CURRENT_FILES, ids=lambda p: p.name)
def test_new_field_with_default_keeps_old_records_readable(tmp_path: Path, path: Path) -> None:
    schema_dir = _evolved_dir(
        tmp_path, path, {"name": "zone_id", "type": ["null", "string"], "default": None})
    old = load_json(path)
    evolved = SchemaSet(schema_dir)
    _, decoded = evolved.decode(encode_with(old, sample_record(old)))
    assert decoded == {**sample_record(old), "zone_id": None}
    # the evolved current schema writes a new header, which the old checkout does not know
    new_payload = evolved.encode(record_name(old), decoded)
    with pytest.raises(CodecError, match="unknown writer schema fingerprint"):
        SCHEMAS.decode(new_payload)
