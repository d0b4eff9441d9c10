"""Seal and open personal fields of records at rest (the store, broker-held egress).

Which fields are personal and which identify the data subject comes from the schema
annotations. A personal field is sealed under the data key of its subject: the nearest
subject identifier in its own part of the record (victim.name -> victim.bsn), else the
record's first identified subject, else the record itself. The retention date of the key
is the ingest date plus the longest retention of the purposes that may use the type.

Nonces are synthetic (HMAC of associated data and plaintext under the data key), so the
same record sealed twice gives the same bytes: replay stays byte-identical, and a nonce
never repeats for different plaintexts.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import io
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import fastavro
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.crypto.key_ids import subject_of
from broker.errors import StorageError
from broker.keys import keyed_pseudonym
from broker.model.avro_writer import compile_writer
from broker.model.schemas import FieldInfo, Schema, SchemaRegistry

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class DataKeys(Protocol):
    def data_key(self, subject: str, retention_until: date, fields: int) -> tuple[str, bytes]: ...

    def flush(self) -> None: ...

    def lookup(self, key_id: str) -> bytes | None: ...


@dataclass
class Opened:
    schema: Schema
    record: dict[str, Any]
    erased: set[str] = field(default_factory=set)  # paths whose key is destroyed
    subjects: dict[str, str] = field(default_factory=dict)  # personal path -> subject


@dataclass(frozen=True)
class Fresh:
    """A record `seal_fresh` has just sealed, carried to the decision of the same batch:
    `Sealer.reopen` gives what `open` of its envelope would, without decoding or
    decrypting what was encrypted a moment before. Never in a repr: it holds plaintext."""

    schema: Schema = field(repr=False)
    record: dict[str, Any] = field(repr=False)  # the validated record, as sealed; never changed
    sealed: tuple[tuple[str, str], ...] = field(repr=False)  # (path, key id), envelope order


def _blank(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        return None if "null" in avro_type else _blank(avro_type[0])
    if isinstance(avro_type, dict):
        logical = avro_type.get("logicalType")
        if logical == "date":
            return _EPOCH_DATE
        if logical == "timestamp-millis":
            return _EPOCH
        kind = avro_type["type"]
        if kind == "enum":
            return avro_type["symbols"][0]
        if kind == "array":
            return []
        if kind == "map":
            return {}
        if kind == "record":
            return {f["name"]: _blank(f["type"]) for f in avro_type["fields"]}
        return _blank(kind)
    return {"string": "", "bytes": b"", "boolean": False, "int": 0, "long": 0,
            "float": 0.0, "double": 0.0, "null": None}[avro_type]


def _get(record: dict[str, Any], path: str) -> Any:
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _set(record: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node: Any = record
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    node[parts[-1]] = value


class _ValueCodec:
    """One field's value to bytes and back, with the field's own Avro type.

    The bytes are fastavro's encoding of {"v": value} under ["null", type]; strings (most
    personal fields) take a fast path both ways, anything unusual goes through fastavro.
    """

    def __init__(self, info: FieldInfo) -> None:
        wrapper = {"type": "record", "name": "v", "fields": [
            {"name": "v", "type": ["null", info.avro_type]}]}
        self.schema = fastavro.parse_schema(wrapper)
        self._write = compile_writer(self.schema)
        self._string = info.avro_type == "string"

    def dump(self, value: Any) -> bytes:
        out: list[bytes] = []
        try:
            self._write({"v": value}, out)
        except Exception:  # noqa: BLE001 - outside the fast path fastavro decides, errors too
            buf = io.BytesIO()
            fastavro.schemaless_writer(buf, self.schema, {"v": value})
            return buf.getvalue()
        return b"".join(out)

    def load(self, data: bytes) -> Any:
        if self._string and len(data) >= 2 and data[0] == 2 and data[1] < 0x80:
            # union branch 1, a string shorter than 64 bytes (one-byte length), exactly
            length = data[1] >> 1
            if not data[1] & 1 and len(data) == 2 + length:
                try:
                    return data[2:].decode()
                except UnicodeDecodeError:
                    pass
        return fastavro.schemaless_reader(io.BytesIO(data), self.schema, None)["v"]  # type: ignore[index,call-overload]


@dataclass(frozen=True)
class _Layout:
    """What sealing needs to know about one schema, worked out once."""

    schema: Schema  # held, so the id() this layout is cached under stays this schema's
    subject_paths: tuple[tuple[str, str, str], ...]  # (path, kind, parent prefix)
    candidates: dict[str, tuple[str, ...]]  # personal path -> subject parents, nearest first
    personal: dict[str, str]  # the schema's own personal paths, each standing for itself
    blanks: dict[str, Any]  # path -> the placeholder left in the skeleton
    # The uuid fields: Avro decoding gives uuid.UUID where JSON input validated to str.
    # None when some uuid is out of their reach (inside an array of records): then the
    # decoded form is made by decoding.
    uuids: tuple[tuple[str, bool], ...] | None  # (path, is an array of uuids)


def _is_uuid(avro_type: Any) -> bool:
    return isinstance(avro_type, dict) and avro_type.get("logicalType") == "uuid"


def _uuid_paths(schema: Schema) -> tuple[tuple[str, bool], ...] | None:
    found = []
    for path, info in schema.fields.items():
        kind = info.avro_type
        if _is_uuid(kind):
            found.append((path, False))
        elif isinstance(kind, dict) and kind.get("type") == "array" and _is_uuid(
                next((b for b in kind["items"] if b != "null"), None)
                if isinstance(kind["items"], list) else kind["items"]):
            found.append((path, True))
    everywhere = json.dumps(schema.raw).count('"logicalType": "uuid"')
    return tuple(found) if everywhere == len(found) else None


def _as_uuid(value: Any) -> Any:
    return uuid.UUID(value) if isinstance(value, str) else value


class _Cipher:
    """AES-GCM and the synthetic-nonce HMAC of one data key, set up once per key."""

    __slots__ = ("aead", "key", "mac")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.aead = AESGCM(key)
        self.mac = hmac.new(key, digestmod="sha256")

    def nonce(self, message: bytes) -> bytes:
        mac = self.mac.copy()
        mac.update(message)
        return mac.digest()[:12]


_CIPHER_CACHE = 1024


class Sealer:
    def __init__(self, registry: SchemaRegistry, keys: DataKeys, subject_key: bytes,
                 retention_days: Mapping[str, int], default_retention_days: int,
                 zone: ZoneInfo) -> None:
        self.registry = registry
        self.keys = keys
        self.subject_key = subject_key
        self.retention_days = dict(retention_days)
        self.default_retention_days = default_retention_days
        self.zone = zone
        self.envelope = registry.get("records.sealed_record")
        self._codecs: dict[tuple[str, str], _ValueCodec] = {}
        self._layouts: dict[int, _Layout] = {}
        # Keys in use, set up for AES-GCM: emptied at every flush (each committed batch), so
        # a destroyed key's material does not outlive the batch that last used it.
        self._ciphers: dict[str, _Cipher] = {}
        self._retention: dict[tuple[str, datetime], date] = {}
        self._subject_mac = hmac.new(subject_key, digestmod="sha256")

    def _layout(self, schema: Schema) -> _Layout:
        layout = self._layouts.get(id(schema))
        if layout is None:
            subjects = tuple((path, kind, path.rpartition(".")[0])
                             for path, kind in schema.subject_paths.items())
            candidates = {}
            for path in schema.personal_paths:
                parents = [parent for _, _, parent in subjects
                           if parent == "" or path.startswith(parent + ".")]
                # nearest (longest) first; among equals the first identified, as before
                candidates[path] = tuple(sorted(dict.fromkeys(parents), key=len, reverse=True))
            blanks = {p: _blank(f.avro_type) for p, f in schema.fields.items()}
            layout = _Layout(schema, subjects, candidates,
                             {p: p for p in schema.personal_paths}, blanks,
                             _uuid_paths(schema))
            self._layouts[id(schema)] = layout
        return layout

    def _cipher(self, key_id: str, key: bytes) -> _Cipher:
        cipher = self._ciphers.get(key_id)
        if cipher is None or cipher.key is not key:
            if len(self._ciphers) >= _CIPHER_CACHE:
                self._ciphers.clear()
            cipher = self._ciphers[key_id] = _Cipher(key)
        return cipher

    # -- subjects ---------------------------------------------------------------------------
    def subject_pseudonym(self, kind: str, value: str) -> str:
        """The pseudonym the audit log and the key store share for one identifier:
        `keyed_pseudonym(subject_key, "kind:value")`, from a keyed HMAC set up once."""
        mac = self._subject_mac.copy()
        mac.update(f"{kind}:{value}".encode())
        return mac.hexdigest()[:32]

    def subjects(self, schema: Schema, record: dict[str, Any], record_id: str
                 ) -> dict[str, str]:
        """Personal path -> subject ('bsn:<pseudonym>' or 'record:<pseudonym>').

        A personal field belongs to the identified subject nearest to it (the longest
        parent prefix; the first identified among equals), else to the record's first
        identified subject, else to the record itself.
        """
        layout = self._layout(schema)
        identified: dict[str, str] = {}  # parent prefix -> its first identified subject
        first: str | None = None
        for path, kind, parent in layout.subject_paths:
            value = _get(record, path)
            if value:
                subject = f"{kind}:{self.subject_pseudonym(kind, value)}"
                identified.setdefault(parent, subject)
                if first is None:
                    first = subject
        if first is None:
            first = f"record:{keyed_pseudonym(self.subject_key, f'{schema.name}:{record_id}')}"
        out = {}
        for path, parents in layout.candidates.items():
            best = first
            for parent in parents:
                found = identified.get(parent)
                if found is not None:
                    best = found
                    break
            out[path] = best
        return out

    def retention_until(self, event_type: str, ingested: datetime) -> date:
        found = self._retention.get((event_type, ingested))
        if found is None:
            days = self.retention_days.get(event_type, self.default_retention_days)
            found = ingested.astimezone(self.zone).date() + timedelta(days=days)
            if len(self._retention) >= 1024:
                self._retention.clear()
            self._retention[(event_type, ingested)] = found
        return found

    # -- seal and open ----------------------------------------------------------------------
    def _codec(self, schema: Schema, path: str) -> _ValueCodec:
        codec = self._codecs.get((schema.name, path))
        if codec is None:
            codec = self._codecs[(schema.name, path)] = _ValueCodec(schema.fields[path])
        return codec

    def seal(self, schema: Schema, record: dict[str, Any], record_id: str,
             retention_until: date, subjects: Mapping[str, str] | None = None,
             personal: Mapping[str, str] | None = None, encoded: bytes | None = None) -> bytes:
        """Seal the personal fields of `record` (of `schema`) into an envelope.

        `personal` maps the record's personal paths to the paths they stand for in the
        event (views: output name -> source path); by default the schema's own annotations.
        `encoded`, when the caller has it, is `schema.encode(record)`: the skeleton as is
        when no field needs sealing.
        """
        return self._seal(schema, record, record_id, retention_until, subjects, personal,
                          encoded)[0]

    def seal_fresh(self, schema: Schema, record: dict[str, Any], record_id: str,
                   retention_until: date) -> tuple[bytes, Fresh]:
        """`seal` of an event, and the plaintext as `reopen` hands it to the decision."""
        payload, sealed = self._seal(schema, record, record_id, retention_until)
        return payload, Fresh(schema, self._as_decoded(schema, record), sealed)

    def _as_decoded(self, schema: Schema, record: dict[str, Any]) -> dict[str, Any]:
        """`record` as decoding its encoding gives it back (what `open` hands the
        decision): validated JSON holds a uuid as str, Avro decoding as uuid.UUID. The
        caller's record is not changed (copy on write)."""
        uuids = self._layout(schema).uuids
        if uuids is None:
            return self.registry.decode_single_object(schema.encode(record),
                                                      ("events", "views"))[1]
        out = record
        copied: dict[str, dict[str, Any]] = {}
        for path, is_array in uuids:
            value = _get(out, path)
            decoded = [_as_uuid(v) for v in value] if is_array and isinstance(value, list) \
                else _as_uuid(value)
            if decoded != value or type(decoded) is not type(value):
                if not copied:
                    out = copied[""] = dict(record)
                _set_copied(out, copied, path, decoded)
        return out

    def _seal(self, schema: Schema, record: dict[str, Any], record_id: str,
              retention_until: date, subjects: Mapping[str, str] | None = None,
              personal: Mapping[str, str] | None = None, encoded: bytes | None = None
              ) -> tuple[bytes, tuple[tuple[str, str], ...]]:
        """The envelope, and (path, key id) of each field it seals."""
        layout = self._layout(schema)
        personal = personal if personal is not None else layout.personal
        found = []
        for path, source_path in personal.items():
            value = _get(record, path)
            if value is not None:
                found.append((path, source_path, value))
        if not found:
            as_is = encoded if encoded is not None else schema.encode(record)
            return self.envelope.encode({"skeleton": as_is, "sealed": []}), ()
        subjects = subjects if subjects is not None else self.subjects(schema, record,
                                                                      record_id)
        # Copy on write: only the records on the way to a sealed field are copied.
        skeleton = dict(record)
        copied: dict[str, dict[str, Any]] = {"": skeleton}
        per_key: dict[str, int] = {}
        plan = []
        for path, source_path, value in found:
            subject = subjects[source_path]
            per_key[subject] = per_key.get(subject, 0) + 1
            plan.append((path, subject, value))
            _set_copied(skeleton, copied, path, layout.blanks.get(path, ""))
        keys = {s: self.keys.data_key(s, retention_until, n) for s, n in per_key.items()}
        sealed = []
        used: list[tuple[str, str]] = []  # (path, key id)
        for path, subject, value in plan:
            key_id, key = keys[subject]
            used.append((path, key_id))
            cipher = self._cipher(key_id, key)
            aad = f"{key_id}|{schema.name}|{path}|{record_id}".encode()
            plaintext = self._codec(schema, path).dump(value)
            nonce = cipher.nonce(aad + b"\0" + plaintext)
            sealed.append({"path": path, "key_id": key_id, "nonce": nonce,
                           "ciphertext": cipher.aead.encrypt(nonce, plaintext, aad)})
        return (self.envelope.encode({"skeleton": schema.encode(skeleton), "sealed": sealed}),
                tuple(used))

    def open(self, payload: bytes, record_id_path: str | None = "event_id",
             record_id: str | None = None) -> Opened:
        """Open an envelope; fields whose key is destroyed come back as None (erased)."""
        envelope = self.envelope.decode(payload)
        schema, record = self.registry.decode_single_object(envelope["skeleton"],
                                                            ("events", "views"))
        if record_id is None:
            record_id = str(_get(record, record_id_path or "event_id")).lower()
        opened = Opened(schema, record)
        for item in envelope["sealed"]:
            path, key_id = item["path"], item["key_id"]
            opened.subjects[path] = subject_of(key_id)
            key = self.keys.lookup(key_id)
            if key is None:
                _set(record, path, None)
                opened.erased.add(path)
                continue
            aad = f"{key_id}|{schema.name}|{path}|{record_id}".encode()
            try:
                plaintext = self._cipher(key_id, key).aead.decrypt(item["nonce"],
                                                                    item["ciphertext"], aad)
            except InvalidTag:
                raise StorageError(f"sealed field {path} of {schema.name} {record_id} does "
                                   "not authenticate: it was altered or moved") from None
            _set(record, path, self._codec(schema, path).load(plaintext))
        return opened

    def reopen(self, fresh: Fresh) -> Opened:
        """What `open` of `fresh`'s envelope gives, now: a field whose key was destroyed
        since it was sealed (an erasure in between) comes back None and erased, as open
        would give it; the others are the plaintext that was sealed."""
        opened = Opened(fresh.schema, fresh.record)
        live: dict[str, bool] = {}
        erased = []
        for path, key_id in fresh.sealed:
            opened.subjects[path] = subject_of(key_id)
            alive = live.get(key_id)
            if alive is None:
                alive = live[key_id] = self.keys.lookup(key_id) is not None
            if not alive:
                erased.append(path)
        if erased:  # rare: a copy, the validated record stays as sealed
            opened.record = copy.deepcopy(fresh.record)
            for path in erased:
                _set(opened.record, path, None)
                opened.erased.add(path)
        return opened

    def seal_blob(self, subject: str, retention_until: date, label: str, data: bytes) -> bytes:
        """Seal opaque bytes (quarantined input) as key_id, newline, nonce, ciphertext."""
        key_id, key = self.keys.data_key(subject, retention_until, 1)
        aad = f"{key_id}|{label}".encode()
        nonce = hmac.new(key, aad + b"\0" + data, hashlib.sha256).digest()[:12]
        return key_id.encode() + b"\n" + nonce + AESGCM(key).encrypt(nonce, data, aad)

    def open_blob(self, sealed: bytes, label: str) -> bytes | None:
        """The bytes, or None when their key was destroyed."""
        key_id_bytes, _, rest = sealed.partition(b"\n")
        key_id = key_id_bytes.decode()
        key = self.keys.lookup(key_id)
        if key is None:
            return None
        return AESGCM(key).decrypt(rest[:12], rest[12:], f"{key_id}|{label}".encode())

    def flush(self) -> None:
        """Make every key used so far durable; call before committing what they sealed."""
        self.keys.flush()
        self._ciphers.clear()

    def forget(self, key_ids: Iterable[str]) -> None:
        """Keys just destroyed: their AES-GCM set-up goes now, not at the next flush."""
        for key_id in key_ids:
            self._ciphers.pop(key_id, None)

    def is_envelope(self, payload: bytes) -> bool:
        return payload[2:10] == self.envelope.fingerprint and payload[:2] == b"\xc3\x01"


def _set_copied(skeleton: dict[str, Any], copied: dict[str, dict[str, Any]], path: str,
                value: Any) -> None:
    """`_set` on a shallow copy of a record: each record on the path is copied once (and
    again if a placeholder replaced it since), so the caller's record is never changed."""
    node = skeleton
    prefix = ""
    parts = path.split(".")
    for part in parts[:-1]:
        prefix = f"{prefix}.{part}" if prefix else part
        current = node.get(part)
        if not isinstance(current, dict):
            return
        child = copied.get(prefix)
        if child is not current:
            child = copied[prefix] = dict(current)
            node[part] = child
        node = child
    node[parts[-1]] = value
