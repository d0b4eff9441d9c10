"""Run a real single-node Apache Kafka 4.x (KRaft, broker + controller in one JVM).

The jars come from Maven Central through ``deploy/kafka/pom.xml`` (cached in ``~/.m2`` and in a
libs directory outside the git tree), or from the ``libs/`` folder of an unpacked Apache Kafka
binary tarball named by ``KAFKA_LIBS_DIR``. Only the standard library is needed; kafka-python is
used for the readiness check when it is importable.

Library use::

    with KafkaNode() as node:
        print(node.bootstrap_servers)  # "127.0.0.1:PORT"

A secured node (``secure=True``) listens with SASL_PLAINTEXT/SCRAM-SHA-512 instead of
PLAINTEXT, runs the StandardAuthorizer with ``allow.everyone.if.no.acl.found=false`` and has
``User:admin`` as its super user (it creates the topics and the ACLs). Its controller
listener wants SASL/PLAIN: the broker reaches its own controller as ``User:kafka-node``
(the other super user), with a password made per start, not as an anonymous principal.
The SCRAM users are written into the metadata log at format time
(``StorageTool format --add-scram``)::

    with KafkaNode(secure=True, users={"politie": "pw"}) as node:
        node.client_config("politie")  # kafka-python security settings of one user
        node.client_config()           # ... of the admin

With ``mtls=True`` a secured node also has an SSL listener that requires a client
certificate signed by the node's own CA (made per start by ``certs.py``, which needs the
``cryptography`` package); the certificate's CN is the principal (CN=politie is
User:politie). Every user gets a certificate; the controller listener is SSL as well, so
the broker reaches its controller as ``User:kafka-node`` and no anonymous principal is a
super user::

    with KafkaNode(secure=True, users={"politie": "pw"}, mtls=True) as node:
        node.ssl_bootstrap_servers          # "127.0.0.1:PORT" of the SSL listener
        node.ssl_client_config("politie")   # kafka-python settings: CA, certificate, key

Command line::

    python deploy/kafka/launcher.py fetch   # resolve the jars, print the libs dir
    python deploy/kafka/launcher.py run     # start, print KAFKA_BOOTSTRAP_SERVERS=..., wait
    python deploy/kafka/launcher.py run --mtls --user politie   # + SSL listener, certificates

Environment:

* ``KAFKA_LIBS_DIR``: where the jars are (default
  ``${XDG_CACHE_HOME:-~/.cache}/covenant-broker/kafka-<version>/libs``). If it already holds
  Kafka jars without our completion marker (a tarball's ``libs/``), it is used as it is.
* ``JAVA_HOME``: used to find ``java`` before ``PATH``.
* ``MAVEN_OPTS`` / ``~/.m2/settings.xml``: honoured by ``mvn`` as usual.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, ModuleType, TracebackType
from typing import IO, Any, Self

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
TEMPLATE = HERE / "server.properties.template"
MARKER_NAME = ".covenant-libs-complete"

READY_LINE = "Kafka Server started"
MIN_JAVA = 17
DEFAULT_HEAP = "384m"
DEFAULT_STARTUP_TIMEOUT_S = 90.0
DEFAULT_STOP_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3
LOG_TAIL_LINES = 60

JAVA_HINT = (
    "install a Java 17+ runtime (Debian/Ubuntu: `apt-get install openjdk-17-jre-headless`; "
    "or set JAVA_HOME)"
)
MVN_HINT = (
    "install Apache Maven (Debian/Ubuntu: `apt-get install maven`), or unpack an Apache Kafka "
    "4.x binary tarball and set KAFKA_LIBS_DIR=<kafka>/libs, or set KAFKA_BOOTSTRAP_SERVERS to "
    "an already running broker (for example the official `apache/kafka` Docker image)"
)


class KafkaLauncherError(RuntimeError):
    """Kafka could not be provisioned, started or stopped."""


class MissingToolError(KafkaLauncherError):
    """A required external tool (java, mvn) is not installed."""


# --------------------------------------------------------------------------- jars


def kafka_version() -> str:
    """The Kafka version pinned in pom.xml (single source of truth)."""
    match = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", POM.read_text())
    if not match:
        raise KafkaLauncherError(f"no <kafka.version> property in {POM}")
    return match.group(1)


def default_libs_dir() -> Path:
    """``$KAFKA_LIBS_DIR``, else ``${XDG_CACHE_HOME:-~/.cache}/covenant-broker/kafka-<v>/libs``."""
    override = os.environ.get("KAFKA_LIBS_DIR")
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "covenant-broker" / f"kafka-{kafka_version()}" / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def _has_kafka_jars(libs: Path) -> bool:
    return libs.is_dir() and any(libs.glob("kafka_2.13-*.jar"))


def _marker_ok(libs: Path) -> bool:
    marker = libs / MARKER_NAME
    return marker.is_file() and marker.read_text().strip() == _pom_digest()


def find_java() -> str:
    """Path of a Java 17+ ``java`` executable, or MissingToolError naming what to install."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = str(Path(java_home) / "bin" / "java") if java_home else None
    java = candidate if candidate and os.access(candidate, os.X_OK) else shutil.which("java")
    if not java:
        raise MissingToolError(f"`java` not found on PATH: {JAVA_HINT}")
    proc = subprocess.run(
        [java, "-XshowSettings:properties", "-version"],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.search(r"java\.specification\.version = (\d+)", proc.stderr)
    if not found or int(found.group(1)) < MIN_JAVA:
        version = found.group(1) if found else "unknown"
        raise MissingToolError(f"{java} is Java {version}; Kafka 4 needs {MIN_JAVA}+: {JAVA_HINT}")
    return java


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise MissingToolError(f"`mvn` not found on PATH and no Kafka jars cached: {MVN_HINT}")
    return mvn


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so parallel test workers resolve the jars only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_libs(libs: Path | None = None) -> Path:
    """Make sure the Kafka jars are present; return the libs directory.

    Runs ``mvn dependency:copy-dependencies`` only when the directory lacks the completion
    marker (whose content is the pom's SHA-256, so editing the pom refreshes the cache). A
    directory that holds Kafka jars but no marker (a tarball's ``libs/``) is used as it is.
    """
    libs = (libs or default_libs_dir()).expanduser().resolve()
    if _marker_ok(libs):
        return libs
    if _has_kafka_jars(libs) and not (libs / MARKER_NAME).exists():
        return libs  # user-provided (unpacked tarball)
    mvn = find_mvn()
    with _file_lock(libs.parent / f".{libs.name}.lock"):
        if _marker_ok(libs):  # another process finished while we waited
            return libs
        staging = Path(tempfile.mkdtemp(prefix=f".{libs.name}-", dir=libs.parent))
        try:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode != 0 or not _has_kafka_jars(staging):
                output = (proc.stdout + proc.stderr).strip()[-4000:]
                raise KafkaLauncherError(
                    f"resolving Kafka jars failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                    f"{output}"
                )
            (staging / MARKER_NAME).write_text(_pom_digest() + "\n")
            if libs.exists():
                shutil.rmtree(libs)
            staging.rename(libs)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return libs


# --------------------------------------------------------------------------- node


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, base64url, without padding.

    Like Kafka's own ``Uuid.randomUuid``, an id that starts with ``-`` is drawn again:
    base64url uses ``-``, and the storage tool's argument parser would read such an id as
    an option (``argument --cluster-id/-t: expected one argument``), one format in 64.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def free_port() -> int:
    """An ephemeral loopback port that was free a moment ago (callers retry on clashes)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ADMIN_USER = "admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"
_SCRAM_NAME = re.compile(r"^[A-Za-z0-9._-]+$")

# A secured node replaces these keys of the template. The controller listener (the
# in-process broker's way to its controller) authenticates too, as User:kafka-node (a super
# user): with SASL/PLAIN and a per-start password, or with mTLS the node's certificate.
# Not SCRAM: SCRAM credentials live in the metadata log, which the controller serves.
SECURE_PROPERTIES = """\
# Secured node (KafkaNode(secure=True)): SASL/SCRAM-SHA-512 clients, ACLs enforced.
listeners=${listeners}
advertised.listeners=${listeners}
inter.broker.listener.name=SASL_PLAINTEXT
listener.security.protocol.map=${protocol_map}
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\\
  org.apache.kafka.common.security.scram.ScramLoginModule required \\
  username="${admin_user}" password="${admin_password}";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=${super_users}
allow.everyone.if.no.acl.found=false
"""
# Added by KafkaNode(secure=True, mtls=True): an SSL listener that requires a client
# certificate of the node's CA; the certificate's CN is the principal (CN=politie is
# User:politie). The same key/trust stores serve the controller listener (server side)
# and the broker's connection to its controller (client side).
MTLS_PROPERTIES = """\
ssl.keystore.type=PEM
ssl.keystore.location=${keystore}
ssl.truststore.type=PEM
ssl.truststore.location=${truststore}
ssl.client.auth=required
ssl.principal.mapping.rules=${mapping_rules}
"""
NODE_PRINCIPAL = "kafka-node"  # the broker's principal at its controller (CN with mTLS)
# Added by KafkaNode(secure=True) without mTLS: SASL/PLAIN on the controller listener only.
CONTROLLER_PLAIN_PROPERTIES = """\
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=\\
  org.apache.kafka.common.security.plain.PlainLoginModule required \\
  username="${node_user}" password="${node_password}" user_${node_user}="${node_password}";
"""


@dataclasses.dataclass(frozen=True)
class MtlsStores:
    """What an mTLS node's properties name: its SSL port and its PEM key/trust stores."""

    port: int
    keystore: Path  # the node's key + certificate chain (PEM)
    truststore: Path  # the CA certificate (PEM)
    mapping_rules: str  # ssl.principal.mapping.rules

_SECURE_KEYS = ("listeners=", "advertised.listeners=", "inter.broker.listener.name=",
                "listener.security.protocol.map=")


def render_properties(
    target: Path,
    *,
    broker_port: int,
    controller_port: int,
    log_dir: Path,
    node_id: int = 1,
    admin_password: str | None = None,
    overrides: dict[str, str] | None = None,
    mtls: MtlsStores | None = None,
) -> None:
    """Write server.properties; with ``admin_password`` the node is secured (SASL + ACLs).

    A secured node's controller listener authenticates the broker as ``User:kafka-node``
    (SASL/PLAIN), so no anonymous principal is a super user. ``mtls`` (secured nodes only)
    adds an SSL listener that requires client certificates and puts the controller
    listener on SSL (the node's certificate, CN=kafka-node).

    ``overrides`` are extra broker properties, appended last (Kafka keeps the last value
    of a key), e.g. ``{"log.retention.check.interval.ms": "1000"}`` for a test node.
    """
    text = string.Template(TEMPLATE.read_text()).substitute(
        node_id=node_id,
        broker_port=broker_port,
        controller_port=controller_port,
        log_dir=str(log_dir),
    )
    if mtls is not None and admin_password is None:
        raise KafkaLauncherError("mTLS needs a secured node (an admin password)")
    if admin_password is not None:
        kept = [line for line in text.splitlines() if not line.startswith(_SECURE_KEYS)]
        listeners = [f"SASL_PLAINTEXT://127.0.0.1:{broker_port}"]
        protocols = ["SASL_PLAINTEXT:SASL_PLAINTEXT"]
        if mtls is None:
            protocols.append("CONTROLLER:SASL_PLAINTEXT")
        else:
            listeners.append(f"SSL://127.0.0.1:{mtls.port}")
            protocols += ["SSL:SSL", "CONTROLLER:SSL"]
        listeners.append(f"CONTROLLER://127.0.0.1:{controller_port}")
        secure = string.Template(SECURE_PROPERTIES).substitute(
            listeners=",".join(listeners),
            protocol_map=",".join(protocols),
            admin_user=ADMIN_USER,
            admin_password=admin_password,
            super_users=f"User:{ADMIN_USER};User:{NODE_PRINCIPAL}",
        )
        if mtls is None:
            # only this JVM (broker and controller in one) ever needs this password
            secure += string.Template(CONTROLLER_PLAIN_PROPERTIES).substitute(
                node_user=NODE_PRINCIPAL, node_password=uuid.uuid4().hex)
        else:
            secure += string.Template(MTLS_PROPERTIES).substitute(
                keystore=mtls.keystore,
                truststore=mtls.truststore,
                mapping_rules=mtls.mapping_rules,
            )
        text = "\n".join(kept) + "\n\n" + secure
    if overrides:
        bad = [k for k, v in overrides.items()
               if not k or "=" in k or any(c in k + v for c in "\n\r")]
        if bad:
            raise KafkaLauncherError(f"server property overrides {bad}: keys non-empty "
                                     "without '=', no line breaks in keys or values")
        text += "\n\n# overrides (KafkaNode(overrides=...))\n" + "".join(
            f"{key}={value}\n" for key, value in overrides.items())
    target.write_text(text)


def scram_client_config(username: str, password: str) -> dict[str, str]:
    """kafka-python settings for a SASL_PLAINTEXT/SCRAM-SHA-512 client."""
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": SCRAM_MECHANISM,
        "sasl_plain_username": username,
        "sasl_plain_password": password,
    }


def ssl_client_config(cafile: Path, certfile: Path, keyfile: Path) -> dict[str, str]:
    """kafka-python settings for an SSL client that authenticates with its certificate."""
    return {
        "security_protocol": "SSL",
        "ssl_cafile": str(cafile),
        "ssl_certfile": str(certfile),
        "ssl_keyfile": str(keyfile),
    }


def load_certs() -> ModuleType:
    """``deploy/kafka/certs.py`` (needs the ``cryptography`` package; mTLS nodes only)."""
    name = "covenant_kafka_certs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "certs.py")
    if spec is None or spec.loader is None:
        raise KafkaLauncherError(f"cannot load {HERE / 'certs.py'}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError as exc:
        del sys.modules[name]
        raise MissingToolError(f"mTLS certificates need the `cryptography` package: {exc}"
                               ) from exc
    return module


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        content = path.read_text(errors="replace").splitlines()
    except OSError:
        return "<no log>"
    return "\n".join(content[-lines:])


def _metadata_ok(
    bootstrap: str, timeout_s: float, security: dict[str, str] | None = None
) -> bool:
    """True when a client metadata request succeeds (kafka-python if present, else TCP)."""
    try:
        from kafka import KafkaAdminClient  # noqa: PLC0415  (optional dependency)
        from kafka.errors import KafkaConfigurationError  # noqa: PLC0415
    except ImportError:
        host, port = bootstrap.rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return True
        except OSError:
            return False
    timeout_ms = max(1000, int(timeout_s * 1000))
    try:
        # kafka-python 3.x: `bootstrap_timeout_ms` (2.x had `api_version_auto_timeout_ms`).
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="covenant-launcher-readiness",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            **(security or {}),
        )
    except KafkaConfigurationError:
        raise  # a bug here, not "not ready yet"
    except Exception:  # noqa: BLE001 - NoBrokersAvailable and friends: not ready yet
        return False
    try:
        admin.list_topics()
    except Exception:  # noqa: BLE001 - any failure of the probe means: not ready yet
        return False
    finally:
        admin.close()
    return True


class KafkaNode:
    """A single-node KRaft Kafka in a child JVM, with its data in a temporary directory.

    Attributes after ``start()``: ``bootstrap_servers`` ("127.0.0.1:PORT"), ``controller_port``,
    ``log_path`` (combined stdout/stderr of the JVM), ``workdir``, ``cluster_id``, ``pid``.
    """

    def __init__(
        self,
        *,
        libs: Path | None = None,
        heap: str = DEFAULT_HEAP,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        keep_workdir: bool = False,
        extra_jvm_args: tuple[str, ...] = (),
        secure: bool = False,
        users: dict[str, str] | None = None,
        overrides: dict[str, str] | None = None,
        mtls: bool = False,
    ) -> None:
        if users and not secure:
            raise KafkaLauncherError("SCRAM users need KafkaNode(secure=True)")
        if mtls and not secure:
            raise KafkaLauncherError("mTLS needs KafkaNode(secure=True)")
        self.secure = secure
        self.mtls = mtls
        self.users: dict[str, str] = dict(users or {})
        if secure:
            # the super user; a random password unless the caller chose one
            self.users.setdefault(ADMIN_USER, uuid.uuid4().hex)
        for name, password in self.users.items():
            if not _SCRAM_NAME.match(name) or not password or any(c in password for c in ',]"'):
                raise KafkaLauncherError(
                    f"SCRAM user {name!r}: names are [A-Za-z0-9._-]+, passwords non-empty "
                    "without ',', ']' or '\"'"
                )
        self._libs_override = libs
        self.heap = heap
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.keep_workdir = keep_workdir
        self.extra_jvm_args = extra_jvm_args
        self.overrides: dict[str, str] = dict(overrides or {})  # server.properties, last
        self.libs: Path | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self.cluster_id: str | None = None
        self.broker_port: int | None = None
        self.controller_port: int | None = None
        self.ssl_port: int | None = None  # mtls: the SSL listener
        self.ca_path: Path | None = None  # mtls: the node CA's certificate (PEM)
        self.certificates: dict[str, Any] = {}  # mtls: user -> certs.Issued
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._lock = threading.Lock()

    # -- public ---------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        if self.broker_port is None:
            raise KafkaLauncherError("KafkaNode is not started")
        return f"127.0.0.1:{self.broker_port}"

    @property
    def ssl_bootstrap_servers(self) -> str:
        """The mTLS listener ("127.0.0.1:PORT") of a ``KafkaNode(secure=True, mtls=True)``."""
        if self.ssl_port is None:
            raise KafkaLauncherError("KafkaNode is not started with mtls=True")
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def client_config(self, user: str = ADMIN_USER) -> dict[str, str]:
        """kafka-python security settings for ``user`` ({} on a PLAINTEXT node)."""
        if not self.secure:
            return {}
        if user not in self.users:
            raise KafkaLauncherError(f"no SCRAM user {user!r} on this node")
        return scram_client_config(user, self.users[user])

    def ssl_client_config(self, user: str = ADMIN_USER) -> dict[str, str]:
        """kafka-python settings for ``user``'s client certificate (mtls nodes)."""
        issued = self.certificates.get(user)
        if issued is None or self.ca_path is None:
            raise KafkaLauncherError(f"no client certificate for {user!r} on this node")
        return ssl_client_config(self.ca_path, issued.cert_path, issued.key_path)

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Resolve jars, format storage, spawn the JVM and wait until a client can use it."""
        with self._lock:
            if self._proc is not None:
                raise KafkaLauncherError("KafkaNode already started")
            java = find_java()
            self.libs = ensure_libs(self._libs_override)
            last_error: KafkaLauncherError | None = None
            for _attempt in range(PORT_ATTEMPTS):
                try:
                    self._start_once(java, self.libs)
                except _PortClashError as exc:
                    last_error = exc
                    self._cleanup_process()
                    self._cleanup_workdir(force=True)
                    continue
                except BaseException:
                    self._cleanup_process()
                    self._cleanup_workdir(force=not self.keep_workdir)
                    raise
                return self
            raise KafkaLauncherError(
                f"could not bind free ports after {PORT_ATTEMPTS} attempts"
            ) from last_error

    def stop(self) -> None:
        """SIGTERM, wait ``stop_timeout_s``, then SIGKILL; then remove the work dir."""
        with self._lock:
            self._cleanup_process()
            self._cleanup_workdir(force=not self.keep_workdir)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------

    def _classpath(self, libs: Path) -> str:
        return str(libs / "*")  # expanded by the JVM itself, no shell involved

    def _start_once(self, java: str, libs: Path) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="covenant-kafka-"))
        data_dir = self.workdir / "data"
        props = self.workdir / "server.properties"
        self.log_path = self.workdir / "kafka.log"
        self.broker_port = free_port()
        self.controller_port = free_port()
        while self.controller_port == self.broker_port:
            self.controller_port = free_port()
        mtls = self._issue_certificates(self.workdir / "certs") if self.mtls else None
        self.cluster_id = new_cluster_id()
        render_properties(
            props,
            broker_port=self.broker_port,
            controller_port=self.controller_port,
            log_dir=data_dir,
            admin_password=self.users[ADMIN_USER] if self.secure else None,
            overrides=self.overrides,
            mtls=mtls,
        )
        scram_args: list[str] = []
        for name, password in sorted(self.users.items()):
            scram_args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]

        fmt = subprocess.run(
            [
                java,
                "-cp",
                self._classpath(libs),
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                f"--cluster-id={self.cluster_id}",
                "-c",
                str(props),
                *scram_args,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaLauncherError(
                f"kafka.tools.StorageTool format failed (exit {fmt.returncode}):\n"
                f"{(fmt.stdout + fmt.stderr).strip()[-4000:]}"
            )

        cmd = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
            *self.extra_jvm_args,
            "-cp",
            self._classpath(libs),
            "kafka.Kafka",
            str(props),
        ]
        self._log_handle = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
        )
        atexit.register(self._atexit_stop)
        self._wait_ready()

    def _issue_certificates(self, directory: Path) -> MtlsStores:
        """A fresh CA, the node's certificate and one client certificate per user."""
        certs = load_certs()
        ca = certs.make_ca(directory)
        node = certs.issue(ca, NODE_PRINCIPAL, directory, server=True)
        self.ca_path = ca.cert_path
        self.certificates = {name: certs.issue(ca, name, directory)
                             for name in sorted(self.users)}
        self.ssl_port = free_port()
        while self.ssl_port in (self.broker_port, self.controller_port):
            self.ssl_port = free_port()
        return MtlsStores(self.ssl_port, node.keystore_path, ca.cert_path,
                          certs.PRINCIPAL_MAPPING_RULES)

    def _wait_ready(self) -> None:
        assert self._proc is not None
        assert self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout_s
        seen_line = False
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = _tail(self.log_path)
                if "Address already in use" in tail:
                    raise _PortClashError(tail)
                raise KafkaLauncherError(
                    f"Kafka exited with code {self._proc.returncode} during start-up; "
                    f"log {self.log_path}:\n{tail}"
                )
            if not seen_line:
                seen_line = READY_LINE in self.log_path.read_text(errors="replace")
            if seen_line:
                remaining = max(1.0, min(10.0, deadline - time.monotonic()))
                if _metadata_ok(self.bootstrap_servers, remaining, self.client_config()):
                    return
            time.sleep(0.2)
        raise KafkaLauncherError(
            f"Kafka not ready after {self.startup_timeout_s:.0f}s "
            f"(saw {READY_LINE!r}: {seen_line}); log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def _atexit_stop(self) -> None:
        # Last resort when the owner forgot stop(); does not help if Python is SIGKILLed.
        if self._proc is not None:
            self._cleanup_process()

    def _cleanup_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            atexit.unregister(self._atexit_stop)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def _cleanup_workdir(self, *, force: bool) -> None:
        if force and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
            self.log_path = None


class _PortClashError(KafkaLauncherError):
    """A chosen port was taken before Kafka bound it; the caller retries with new ports."""


# --------------------------------------------------------------------------- CLI


def _cmd_fetch(_args: argparse.Namespace) -> int:
    print(ensure_libs())
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        # First signal: ignore further ones and unwind, so `with node:` stops the JVM.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    users = {name: uuid.uuid4().hex for name in args.user} if args.mtls else None
    node = KafkaNode(heap=args.heap, startup_timeout_s=args.timeout, keep_workdir=args.keep,
                     secure=args.mtls, users=users, mtls=args.mtls)
    started = time.monotonic()
    try:
        with node:
            print(f"KAFKA_BOOTSTRAP_SERVERS={node.bootstrap_servers}", flush=True)
            if args.mtls:
                print(f"KAFKA_SSL_BOOTSTRAP_SERVERS={node.ssl_bootstrap_servers}", flush=True)
                print(f"KAFKA_CA_FILE={node.ca_path}", flush=True)
                print(f"# client certificates (<name>.crt, <name>.key) in "
                      f"{node.ca_path.parent if node.ca_path else '?'}: "
                      f"{', '.join(sorted(node.certificates))}", file=sys.stderr, flush=True)
            print(
                f"# Kafka {kafka_version()} pid {node.pid} ready in "
                f"{time.monotonic() - started:.1f}s; log {node.log_path}; Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            while node.is_running():
                time.sleep(0.5)
            tail = _tail(node.log_path or Path())
            print(f"# Kafka exited unexpectedly; log tail:\n{tail}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("# stopped", file=sys.stderr)
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="resolve the Kafka jars and print the libs directory")
    run = sub.add_parser("run", help="start a node and run until Ctrl-C / SIGTERM")
    run.add_argument("--heap", default=DEFAULT_HEAP, help="JVM -Xmx/-Xms (default %(default)s)")
    run.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_STARTUP_TIMEOUT_S,
        help="start-up timeout in seconds (default %(default)s)",
    )
    run.add_argument("--keep", action="store_true", help="keep the data/log dir on exit")
    run.add_argument("--mtls", action="store_true",
                     help="secured node (ACLs enforced) with an SSL listener that requires a "
                     "client certificate; prints KAFKA_SSL_BOOTSTRAP_SERVERS and the CA")
    run.add_argument("--user", action="append", default=[], metavar="NAME",
                     help="with --mtls: issue a client certificate CN=NAME (User:NAME); "
                     "repeatable; 'admin' (the super user) always gets one")
    args = parser.parse_args(argv)
    if args.user and not args.mtls:
        parser.error("--user needs --mtls")
    try:
        return int({"fetch": _cmd_fetch, "run": _cmd_run}[args.command](args))
    except KafkaLauncherError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
