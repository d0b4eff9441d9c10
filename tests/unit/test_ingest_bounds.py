"""Issue 15, item 7: one huge input line is read as a stream and quarantined as its length,
hash and a bounded prefix, never whole, in memory or in the quarantine table."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker import cli
from broker.app.service import Broker
from broker.clock import parse_instant
from broker.config import load_settings
from broker.pipeline.ingest import (
    LINE_MARGIN,
    PREFIX_BYTES,
    Oversized,
    read_lines,
    split_lines,
)
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
LIMIT = 256 * 1024  # the default max_event_bytes
SEAL_OVERHEAD = 512  # key id, nonce and tag around a sealed blob, generously


class _ChunkStream:
    """A stream whose bytes come from a generator: nothing holds the whole input."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self.chunks = chunks
        self.pending = b""

    def read(self, size: int, /) -> bytes:
        while len(self.pending) < size:
            chunk = next(self.chunks, None)
            if chunk is None:
                break
            self.pending += chunk
        out, self.pending = self.pending[:size], self.pending[size:]
        return out


def _huge_event(size: int) -> bytes:
    """A JSON line of about `size` bytes (a description far over every limit)."""
    return json.dumps(f.boa_waarneming(description="x" * size)).encode()


def _quarantine_rows(data_dir: Path) -> list[tuple[str, str, str, bytes]]:
    with sqlite3.connect(data_dir / "broker.db") as db:
        return [(str(p), str(c), str(r), bytes(raw)) for p, c, r, raw in db.execute(
            "SELECT position, reason_code, reason, raw FROM quarantine ORDER BY id")]


def _opened(data_dir: Path, source: str, position: str, raw: bytes) -> bytes:
    broker = Broker(load_settings(overrides={"data_dir": data_dir}, environ={}))
    try:
        opened = broker.sealer.open_blob(raw, f"quarantine|{source}|{position}")
    finally:
        broker.close()
    assert opened is not None
    return opened


def test_an_oversized_line_given_to_ingest_is_stored_as_length_hash_and_prefix(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = _huge_event(5 * 1024 * 1024)
    data = tmp_path / "in.jsonl"
    data.write_bytes(f.jsonl(f.boa_waarneming()) + huge + b"\n" + f.jsonl(f.boa_waarneming()))
    data_dir = tmp_path / "data"
    assert cli.main(["--data-dir", str(data_dir), "--now", "2026-05-10T12:00:00Z", "--json",
                     "ingest", "--source", "gemeente", "--type", "boa_waarneming",
                     str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accepted"] == 2
    assert out["quarantine"] == [{"position": "line 2", "reason_code": "event_too_large",
                                  "reason": f"{len(huge)} bytes, the limit is {LIMIT}"}]
    [(position, code, _, raw)] = _quarantine_rows(data_dir)
    assert (position, code) == ("line 2", "event_too_large")
    assert len(raw) <= PREFIX_BYTES + 200 + SEAL_OVERHEAD  # never the 5 MB line
    stored = _opened(data_dir, "gemeente", "line 2", raw)
    header, _, prefix = stored.partition(b"\n")
    assert header.decode() == (f"oversized input: {len(huge)} bytes, sha256 "
                               f"{hashlib.sha256(huge).hexdigest()}; the first "
                               f"{PREFIX_BYTES} bytes follow")
    assert prefix == huge[:PREFIX_BYTES]


def test_an_oversized_input_already_in_memory_is_stored_bounded_too(
        make_broker: Callable[..., Broker], tmp_path: Path) -> None:
    """The path a Kafka record value takes: the triage bounds what it stores."""
    huge = _huge_event(2 * 1024 * 1024)
    broker = make_broker()
    report = broker.ingest("gemeente", "gemeente.boa_waarneming", [("line 1", huge)], NOW)
    assert [q.reason_code for q in report.quarantined] == ["event_too_large"]
    [(_, _, _, raw)] = _quarantine_rows(tmp_path / "data")
    assert len(raw) <= PREFIX_BYTES + 200 + SEAL_OVERHEAD
    opened = broker.sealer.open_blob(raw, "quarantine|gemeente|line 1")
    assert opened is not None
    assert opened.endswith(huge[:PREFIX_BYTES])
    assert hashlib.sha256(huge).hexdigest().encode() in opened


def test_the_line_reader_holds_a_bounded_buffer_of_a_huge_line() -> None:
    size = 40 * 1024 * 1024
    digest = hashlib.sha256()

    def chunks() -> Iterator[bytes]:
        yield b'{"first": 1}\n  '
        piece = b"y" * (1024 * 1024)
        for _ in range(size // len(piece)):
            digest.update(piece)
            yield piece
        yield b'\n{"last": 2}\n'

    tracemalloc.start()
    try:
        out = list(read_lines(_ChunkStream(chunks()), LIMIT))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out == [(1, b'{"first": 1}'),
                   (2, Oversized(size, digest.hexdigest(), b"y" * PREFIX_BYTES)),
                   (3, b'{"last": 2}')]
    # the line buffer, a copy of it and the stream's chunks: nothing near the 40 MB line
    assert peak < 2 * (LIMIT + LINE_MARGIN) + 4 * 1024 * 1024


def _expected(data: bytes, limit: int) -> list[tuple[int, bytes | Oversized]]:
    out: list[tuple[int, bytes | Oversized]] = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if len(raw) > limit + LINE_MARGIN:
            kept = raw.lstrip()
            if kept:
                out.append((number, Oversized(len(kept), hashlib.sha256(kept).hexdigest(),
                                              kept[:PREFIX_BYTES])))
        elif raw.strip():
            out.append((number, raw.strip()))
    return out


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(st.one_of(st.binary(max_size=40),
                                st.builds(lambda n, c, w: w + c * n,
                                          st.integers(0, 9000), st.sampled_from([b"a", b" "]),
                                          st.sampled_from([b"", b" \t", b"\r"]))),
                      max_size=6),
       chunk=st.integers(1, 5000), trailing=st.booleans())
def test_the_line_reader_is_split_lines_with_a_bound(lines: list[bytes], chunk: int,
                                                     trailing: bool) -> None:
    """Any input, read in any chunking: the lines split_lines gives, a line past the bound
    as its length, hash and prefix (hostile input decides the line lengths)."""
    data = b"\n".join(lines) + (b"\n" if trailing else b"")
    limit = 100  # bound = 100 + LINE_MARGIN: the longer generated lines cross it
    got = list(read_lines(io.BytesIO(data), limit, chunk_bytes=chunk))
    assert got == _expected(data, limit)
    if all(len(raw) <= limit + LINE_MARGIN for raw in data.split(b"\n")):
        assert got == list(split_lines(data))
