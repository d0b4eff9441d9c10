"""Secret keys in the data directory, and the one file rule for secrets and personal data.

Pseudonymisation uses one HMAC key per purpose, so the same value gets unrelated
pseudonyms in different purposes. The data subject key (for the audit log's subject
pseudonyms) and the commitment key (for keyed commitments to delivered bytes) are separate.

A key is created only where nothing depends on it yet. `keys/manifest.json` records every
key created or found (its file and an id: an HMAC of a fixed label under the key, or the
SHA-256 of a public key; never the secret). A recorded key that is missing or holds
another key is refused, as is a missing core key where the data dir already holds
databases: a new key would silently split old pseudonyms from new ones, make sealed data
unreadable or erasure miss the person, so the operator restores it from backup instead.

Creation is atomic and serialised across processes: `flock` on `keys/.lock`, a fresh file
created exclusively (O_CREAT|O_EXCL, mode 0600), written, fsynced, then `link`ed into place,
which never overwrites a key another process linked first.

`require_private` is the file rule: every secret and every file with personal data is the
current user's and closed to group and others (files 0600, directories 0700); files the
broker writes are created so from the start (`os.open` with the mode, never a chmod after
writing), which also holds for SQLite's -wal and -shm files (SQLite gives them the mode of
their database).
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.errors import KeyFileError, UnsafeFileError

KEY_BYTES = 32
MANIFEST = "manifest.json"
LOCK = ".lock"
SIGNING_KEY = "checkpoint-signing"
SIGNING_FILE = "checkpoint-signing.pem"
_SAFE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_ID_LABEL = b"covenant-broker key id v1"
_MAX_KEY_FILE = 64 * 1024

# Keys every broker data dir has from its first start (Broker creates them together, under
# the lock): each missing one is an incident once the data dir holds databases.
CORE_KEYS = ("kek", "subject", "commitment", SIGNING_KEY)
# Keys whose loss costs nothing kept: console sessions end, users log in again.
REGENERABLE = frozenset({"web-session"})

_DEPENDS: dict[str, str] = {
    "end-user": "the end-user pseudonyms in access entries (X-End-User of the recipient "
                "API); who a recipient's end user was is found by them",
    "kek": "every data key (keystore.db, or the Kafka key topic) is wrapped under it, so "
           "no sealed event field opens without it",
    "subject": "the subject pseudonyms in sealed events, data keys and audit entries; "
               "erasure and subject reports find a person by them",
    "commitment": "the commitments to delivered records in the audit log",
    SIGNING_KEY: "the signed checkpoints of the audit log, which verifiers check against "
                 "its public key",
    "egress-link": "the broker_link headers of the Kafka egress records (each record's "
                   "store position and tombstone); consume, expiry and erasure read them",
}


# --------------------------------------------------------------------------------------
# The file rule
# --------------------------------------------------------------------------------------


def require_private(path: Path, st: os.stat_result | None = None, *,
                    directory: bool = False) -> None:
    """Refuse a secret or personal-data file (or its directory) that others could read.

    The one rule for key files, databases, the data dir and keys/: owned by the current
    user, no group or other permission bits. `st` is an fstat of an opened file (so the
    file checked is the one read), else the path is stat'ed.
    """
    st = st if st is not None else path.stat()
    kind, want = ("directory", 0o700) if directory else ("file", 0o600)
    if directory != stat.S_ISDIR(st.st_mode) or not (directory or stat.S_ISREG(st.st_mode)):
        raise UnsafeFileError(f"{path}: is not a regular {kind}")
    if st.st_uid != os.geteuid():
        raise UnsafeFileError(f"{path}: owned by uid {st.st_uid}, not by the user running the "
                              f"broker (uid {os.geteuid()}); it holds secrets or personal "
                              f"data (chown {os.geteuid()} {path})")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise UnsafeFileError(f"{path}: {kind} has mode {mode:04o}; it holds secrets or "
                              f"personal data and must be {want:04o} "
                              f"(chmod {want:o} {path})")


def private_dir(path: Path, *, close_if_open: bool = False) -> bool:
    """Create the directory 0700 (its parents as usual), or check an existing one.

    With `close_if_open` (the data dir, at start): a directory of the user's own that
    others may list is closed to 0700 instead of refused, and True says so. Its files are
    checked one by one (0600 each, keys/ 0700), so a data dir someone made with `mkdir`
    or copied with a config inside is made private rather than a reason not to run.
    """
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        st = path.stat()
        if (close_if_open and stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid()
                and stat.S_IMODE(st.st_mode) & 0o077):
            path.chmod(0o700)
            return True
        require_private(path, st, directory=True)
    return False


def private_db(path: Path) -> None:
    """Before SQLite opens `path`: create the database file 0600, or check it and its
    -wal and -shm files (SQLite creates those with the database's mode)."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, _CREATE, 0o600))
    except FileExistsError:
        require_private(path)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            require_private(side)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _temp_beside(path: Path, data: bytes) -> Path:
    """A new 0600 file beside `path` holding `data`, on disk (fsynced)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, _CREATE, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_private(path: Path, data: bytes) -> bool:
    """Put `data` at `path` atomically unless something is there; True if this call did.

    `link` fails where the name exists (a file, or a symlink however dangling), so a key
    another process made first is never overwritten and no reader sees half a file.
    """
    tmp = _temp_beside(path, data)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    _sync_dir(path.parent)
    return True


def write_private(path: Path, data: bytes) -> None:
    """Write a file with personal data (a subject report, an export): created 0600, then
    renamed over any earlier file, whose mode therefore never carries over. A device or
    pipe named as the output (/dev/stdout) is written as it is: nothing lands on disk."""
    if path.exists() and not path.is_file():
        with path.open("wb") as stream:
            stream.write(data)
        return
    tmp = _temp_beside(path, data)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_private(path: Path) -> bytes:
    """A secret file's bytes, refused unless it passes `require_private` (checked on the
    opened file). Symlinks are followed: mounted secrets are often links. O_NONBLOCK: a
    FIFO put in a key's place is refused, not waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        require_private(path, os.fstat(fd))
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(_MAX_KEY_FILE + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_KEY_FILE:  # a key is tens of bytes: do not load whatever is there
        raise KeyFileError(f"{path}: larger than {_MAX_KEY_FILE} bytes; not a key file")
    return data


@contextmanager
def key_lock(directory: Path) -> Iterator[None]:
    """The data dir's key lock: one process at a time creates keys or edits the manifest."""
    fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def read_or_create_private(path: Path, generate: Callable[[], bytes]) -> bytes:
    """The file at `path`, or `generate()`'s bytes put there first (under the lock in
    the file's directory, so concurrent first use ends with one file every caller reads)."""
    try:
        return read_private(path)
    except FileNotFoundError:
        pass
    with key_lock(path.parent):
        if not os.path.lexists(path):
            create_private(path, generate())
        return read_private(path)


# --------------------------------------------------------------------------------------
# Key kinds
# --------------------------------------------------------------------------------------


def new_signing_pem() -> bytes:
    """A new Ed25519 private key, PKCS#8 PEM without encryption."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


def signing_key_from_pem(data: bytes, path: Path) -> Ed25519PrivateKey:
    """The Ed25519 key in PEM bytes; errors name the file, never its contents."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ValueError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key


def _secret_id(value: bytes, path: Path) -> str:
    if len(value) != KEY_BYTES:
        raise KeyFileError(f"{path}: key file holds {len(value)} bytes, expected {KEY_BYTES}; "
                           "restore it from the backup of this data dir's keys")
    return "hmac-sha256:" + hmac.new(value, _ID_LABEL, hashlib.sha256).hexdigest()[:32]


def _signing_id(value: bytes, path: Path) -> str:
    try:
        public = signing_key_from_pem(value, path).public_key()
    except ValueError as exc:
        raise KeyFileError(f"{exc}; restore it from the backup of this data dir's keys")\
            from None
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519-sha256:" + hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class _Kind:
    file: str
    generate: Callable[[], bytes]
    key_id: Callable[[bytes, Path], str]


def _kind(name: str) -> _Kind:
    if name == SIGNING_KEY:
        return _Kind(SIGNING_FILE, new_signing_pem, _signing_id)
    if not _SAFE.match(name):
        raise ValueError(f"unsafe key name {name!r}")
    return _Kind(f"{name}.key", lambda: secrets.token_bytes(KEY_BYTES), _secret_id)


def _depends(name: str) -> str:
    if name in _DEPENDS:
        return _DEPENDS[name]
    if name.startswith("pseudonym."):
        purpose = re.sub(r"\.v[0-9]+$", "", name.removeprefix("pseudonym."))
        return (f"the pseudonymised refs delivered for purpose {purpose!r}; replay and "
                "linking a person's old refs to new ones need it")
    return "data the broker wrote under it"


# --------------------------------------------------------------------------------------
# The key store
# --------------------------------------------------------------------------------------


class KeyStore:
    """The data dir's keys. `depends_on`: the files that hold data sealed, pseudonymised or
    signed under them (the databases); once one exists, a missing core key is an incident."""

    def __init__(self, directory: Path, depends_on: Sequence[Path] = ()) -> None:
        self.directory = directory
        self.depends_on = tuple(depends_on)
        self._cache: dict[str, bytes] = {}

    def initialise(self) -> None:
        """Open every core key before anything is written under them: on a fresh data dir
        they are all created now (a concurrent start waits on the lock, then finds them);
        otherwise each is checked against the manifest. Raises KeyFileError."""
        for name in CORE_KEYS:
            self._load(name)

    def secret(self, name: str) -> bytes:
        """The named 32-byte secret, created (mode 0600) where nothing depends on it yet."""
        if name == SIGNING_KEY:
            raise ValueError(f"{name!r} is the signing key, not a secret")
        return self._load(name)

    def signing_key_pem(self) -> bytes:
        """The checkpoint signing key (Ed25519, PKCS#8 PEM), kept like the secrets."""
        return self._load(SIGNING_KEY)

    def _load(self, name: str) -> bytes:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        kind = _kind(name)
        path = self.directory / kind.file
        private_dir(self.directory)
        value = _read_if_there(path)
        if value is not None:  # the common case: a recorded key, no lock needed
            found = kind.key_id(value, path)
            if name in REGENERABLE or self._manifest().get(name) == found:
                self._cache[name] = value
                return value
        with key_lock(self.directory):  # create or record it: one process at a time
            manifest = self._manifest()
            recorded = manifest.get(name)
            value = _read_if_there(path)
            if value is None:
                if recorded is not None:
                    raise KeyFileError(self._lost(path, name, "keys/manifest.json records it "
                                                              f"(id {recorded})"))
                held = [p.name for p in self.depends_on if p.exists()]
                if name in CORE_KEYS and held:
                    raise KeyFileError(self._lost(path, name, "this data dir already holds "
                                                              + ", ".join(held)))
                if not create_private(path, kind.generate()):  # the name is taken, yet
                    raise KeyFileError(  # unreadable: a link to nothing
                        f"{path}: a link to a file that does not exist; restore the key it "
                        "pointed to, or remove the link on a fresh data dir")
                value = read_private(path)
            found = kind.key_id(value, path)
            if recorded is not None and recorded != found:
                raise KeyFileError(
                    f"{path}: holds another key (id {found}) than the one keys/manifest.json "
                    f"records (id {recorded}), so it is not used. What depends on the "
                    f"recorded key: {_depends(name)}. Put the original {kind.file} back from "
                    "the backup of this data dir's keys")
            if recorded is None and name not in REGENERABLE:
                manifest[name] = found
                self._write_manifest(manifest)
        self._cache[name] = value
        return value

    def _lost(self, path: Path, name: str, why: str) -> str:
        return (f"{path}: key file is missing, but {why}. What depends on it: "
                f"{_depends(name)}. Restore {path.name} from the backup of this data dir's "
                "keys; the broker does not make a new one here, as that would silently "
                "cut what is already stored off from it")

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def _manifest(self) -> dict[str, str]:
        """Key name -> recorded id; empty where no manifest is written yet."""
        try:
            data = read_private(self.manifest_path)
        except FileNotFoundError:
            return {}
        try:
            doc = json.loads(data)
            keys = doc["keys"]
            out = {str(name): str(entry["id"]) for name, entry in keys.items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise KeyFileError(f"{self.manifest_path}: not a key manifest; restore it from "
                               "the backup of this data dir's keys") from None
        return out

    def _write_manifest(self, ids: dict[str, str]) -> None:
        doc = {"format": 1,
               "about": "ids of this data dir's keys (never the keys); a missing or "
                        "different key file is refused: restore it from backup",
               "keys": {name: {"file": _kind(name).file, "id": key_id}
                        for name, key_id in sorted(ids.items())}}
        write_private(self.manifest_path, (json.dumps(doc, indent=2) + "\n").encode())

    def pseudonym_key(self, purpose: str, version: int = 1) -> bytes:
        """The purpose's pseudonymisation key; rotation adds versions, old ones stay for replay."""
        suffix = "" if version == 1 else f".v{version}"
        return self.secret(f"pseudonym.{purpose}{suffix}")

    def subject_key(self) -> bytes:
        return self.secret("subject")

    def commitment_key(self) -> bytes:
        return self.secret("commitment")

    @property
    def signing_key_path(self) -> Path:
        return self.directory / SIGNING_FILE


def _read_if_there(path: Path) -> bytes | None:
    try:
        return read_private(path)
    except FileNotFoundError:
        return None


def keyed_pseudonym(key: bytes, value: str) -> str:
    """HMAC-SHA256 of the value, 128 bits in hex: stable per key, unlinkable across keys."""
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def commitment(key: bytes, data: bytes) -> str:
    """A keyed commitment to bytes: proves what was sent without storing it."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def committer(key: bytes) -> Callable[[bytes], str]:
    """`commitment` under one key, the keyed HMAC set up once (each call copies it)."""
    base = hmac.new(key, digestmod=hashlib.sha256)

    def commit(data: bytes) -> str:
        mac = base.copy()
        mac.update(data)
        return mac.hexdigest()

    return commit
