"""Avro single-object encoding: 2-byte marker, CRC-64-AVRO fingerprint (little-endian), payload.

The framing lets a message name its writer schema without a registry server: the
fingerprint of the schema's Parsing Canonical Form identifies it.
"""

from __future__ import annotations

import io
import struct
from typing import Any

import fastavro

MARKER = b"\xc3\x01"
HEADER_SIZE = 10
_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """The Rabin fingerprint the Avro specification calls CRC-64-AVRO."""
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def fingerprint(canonical_form: str) -> bytes:
    """The 8 fingerprint bytes as they stand in a single-object header."""
    return struct.pack("<Q", crc64_avro(canonical_form.encode("utf-8")))


def encode(parsed_schema: Any, fp: bytes, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(MARKER)
    buf.write(fp)
    fastavro.schemaless_writer(buf, parsed_schema, record)
    return buf.getvalue()


def split_header(data: bytes) -> tuple[bytes, bytes] | None:
    """(fingerprint, payload) when `data` is single-object encoded, else None."""
    if len(data) < HEADER_SIZE or data[:2] != MARKER:
        return None
    return data[2:HEADER_SIZE], data[HEADER_SIZE:]


CONFLUENT_MAGIC = 0x00
CONFLUENT_HEADER_SIZE = 5


def confluent_schema_id(data: bytes) -> int | None:
    """The schema id of a record in the Confluent Schema Registry wire format (magic byte
    0x00, a 4-byte big-endian schema id, then the Avro body), else None. No JSON text and no
    single-object encoding starts with a zero byte, so the test cannot misjudge either."""
    if len(data) < CONFLUENT_HEADER_SIZE or data[0] != CONFLUENT_MAGIC:
        return None
    return int.from_bytes(data[1:CONFLUENT_HEADER_SIZE], "big")


def decode_payload(
    payload: bytes, writer_schema: Any, reader_schema: Any | None = None
) -> dict[str, Any]:
    """Decode a payload; with a reader schema, Avro schema resolution applies."""
    buf = io.BytesIO(payload)
    record = fastavro.schemaless_reader(buf, writer_schema, reader_schema)
    if buf.tell() != len(payload):
        raise ValueError(f"{len(payload) - buf.tell()} trailing bytes after the record")
    if not isinstance(record, dict):
        raise ValueError("payload is not an Avro record")
    return record
