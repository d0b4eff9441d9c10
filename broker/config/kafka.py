"""Settings of the Kafka backend (the `kafka:` section of the config) and its topic names.

Every topic name derives from one prefix (default ``covenant.``):

=====================================  =========================================  ==========
topic                                  holds                                      partitions
=====================================  =========================================  ==========
``covenant.ingress.<event_type>``      raw input of one event type (JSON or Avro)  N
``covenant.store``                     the immutable event log of every type       N
                                       (sealed Avro), no deletion by time or size
``covenant.egress.<recipient>.<purpose>``  compacted: released views (key: ref) and   1
                                       tombstones; deleted after the retention
``covenant.quarantine``                bad input with its reason                   N
``covenant.revisions``                 accepted corrections and withdrawals of the  N
                                       events (broker/backends/kafka/revisions.py)
``covenant.audit``                     hash-chained audit entries                  N + 1
``covenant.control``                   control events (theme switches)             1
``covenant.expiry``                    compacted: which records have a tombstone   1
``covenant.keys``                      compacted: wrapped data keys; a tombstone   1
                                       destroys one (broker/backends/kafka/keys.py)
=====================================  =========================================  ==========

N is ``kafka.partitions``. It fixes how event ids map to partitions, so it cannot change
once the topics exist (the start-up check refuses a mismatch).

One store topic for all types, not one per type: the event log port addresses a stored
event by one position (the embedded store numbers events across types), and on Kafka that
position is ``offset * N + partition`` of the store topic (`store_position`). Audit entries
and egress records name events by it, so replay and the audit's data-subject lookups find
the event from the position alone. The event type is the record's ``event_type`` header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveInt,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.config import tls as kafka_tls

_LEGAL = re.compile(r"^[A-Za-z0-9._-]+$")
MAX_TOPIC_LENGTH = 249


class KafkaConfig(BaseModel):
    """The `kafka:` section; environment: COVENANT_BROKER_KAFKA__<KEY>."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = "localhost:9092"
    topic_prefix: str = "covenant."
    partitions: PositiveInt = Field(
        default=3, description="partitions of every ingress and store topic and of the "
        "quarantine topic; the audit topic gets one more (the commands chain)")
    replication_factor: PositiveInt = 1
    group_id: str = "covenant-broker"
    transactional_id_prefix: str | None = Field(
        default=None, description="default: the group id; partition p writes as "
        "<prefix>-<p>, commands as <prefix>-commands")
    instance_id: str | None = Field(
        default=None, description="static group membership (group.instance.id): a "
        "restarted member with the same id gets its partitions back without waiting for "
        "the session timeout")
    client_id: str = "covenant-broker"
    ingress_retention_ms: int = Field(
        default=24 * 3600 * 1000, description="retention.ms of the ingress topics when they "
        "are created: the sources' raw input (plaintext) is deleted after this long even "
        "if serve never consumed it, so keep it above the longest serve outage you must "
        "ride out (see deploy/kafka/README.md, 'Raw input on the ingress topics')")
    ingress_segment_ms: PositiveInt = Field(
        default=3_600_000, description="segment.ms of the ingress topics when they are "
        "created: purged input leaves the segment files only once its segment has rolled")
    egress_segment_ms: PositiveInt = Field(
        default=3_600_000, description="segment.ms and max.compaction.lag.ms of the egress "
        "topics when they are created: a record a tombstone ends (expiry, erasure) leaves "
        "the segment files once its segment rolled and the cleaner ran "
        "(docs/kafka-retention.md)")
    ingress_purge_interval_ms: int = Field(
        default=60_000, ge=0, description="how often serve deletes the ingress records its "
        "group has committed (DeleteRecords up to the committed offsets); 0: never")
    keys_segment_ms: PositiveInt = Field(
        default=600_000, description="segment.ms of the key topic when it is created: a "
        "destroyed key's wrapped bytes leave the log files about this long after erasure "
        "(see broker/backends/kafka/keys.py)")
    session_timeout_ms: PositiveInt = 10_000
    heartbeat_interval_ms: PositiveInt = 3_000
    max_poll_interval_ms: PositiveInt = 300_000
    transaction_timeout_ms: PositiveInt = 60_000
    request_timeout_ms: PositiveInt = 30_000
    max_batch: PositiveInt = Field(default=500, le=100_000,
                                   description="records per poll (per batch); at most 100000")
    poll_timeout_ms: PositiveInt = 500
    retries: PositiveInt = Field(default=6, description="attempts for a retriable failure")
    retry_backoff_ms: PositiveInt = 200
    # Authentication (the broker's own principal). The password is a SecretStr: it prints
    # as '**********' (config check, logs) and is revealed only to kafka-python.
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = Field(
        default=None, description="environment: COVENANT_BROKER_KAFKA__SASL_PLAIN_PASSWORD")
    # TLS (SSL, SASL_SSL). With SSL the broker authenticates with its client certificate
    # (mTLS); the files are checked at load (broker/config/tls.py). Keep this field order: the
    # key file's check reads the password and the certificate validated before it.
    ssl_cafile: Path | None = Field(
        default=None, description="PEM CA certificate(s) that signed the Kafka brokers' "
        "certificates; default: the system's trusted CAs")
    ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate (chain) of the broker principal")
    ssl_password: SecretStr | None = Field(
        default=None, description="password of an encrypted ssl_keyfile; environment: "
        "COVENANT_BROKER_KAFKA__SSL_PASSWORD")
    ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of ssl_certfile, mode 0600 or stricter")
    ssl_check_hostname: bool = Field(
        default=True, description="check that the broker's certificate names the host of "
        "bootstrap_servers")

    @field_validator("ssl_cafile", "ssl_certfile")
    @classmethod
    def _pem_certificates(cls, value: Path | None) -> Path | None:
        if value is not None:
            kafka_tls.certificates(value)
        return value

    @field_validator("ssl_keyfile")
    @classmethod
    def _private_key(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return value
        password: SecretStr | None = info.data.get("ssl_password")
        secret = password.get_secret_value() if password is not None else None
        certfile: Path | None = info.data.get("ssl_certfile")
        if certfile is None:
            kafka_tls.private_key(value, secret)
        else:
            kafka_tls.check_pair(certfile, value, secret)
        return value

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaConfig:
        sasl = self.security_protocol.startswith("SASL_")
        given = [name for name in ("sasl_mechanism", "sasl_plain_username",
                                   "sasl_plain_password") if getattr(self, name) is not None]
        if sasl and len(given) < 3:
            raise ValueError(f"security_protocol {self.security_protocol} needs "
                             "sasl_mechanism, sasl_plain_username and sasl_plain_password")
        if not sasl and given:
            raise ValueError(f"{', '.join(given)} need security_protocol SASL_PLAINTEXT "
                             "or SASL_SSL")
        return self

    @model_validator(mode="after")
    def _tls_complete(self) -> KafkaConfig:
        tls = self.security_protocol.endswith("SSL")
        given = [name for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile",
                                   "ssl_password") if getattr(self, name) is not None]
        if not tls and given:
            raise ValueError(f"{', '.join(given)} need security_protocol SSL or SASL_SSL")
        if self.security_protocol == "SSL" and (self.ssl_certfile is None
                                                or self.ssl_keyfile is None):
            raise ValueError("security_protocol SSL needs ssl_certfile and ssl_keyfile (the "
                             "broker authenticates with its client certificate)")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together")
        if self.ssl_password is not None and self.ssl_keyfile is None:
            raise ValueError("ssl_password needs ssl_keyfile")
        return self

    def security_settings(self) -> dict[str, Any]:
        """kafka-python keyword arguments for authentication and TLS ({} for PLAINTEXT)."""
        settings: dict[str, Any] = {}
        if self.security_protocol == "PLAINTEXT":
            return settings
        settings["security_protocol"] = self.security_protocol
        if self.security_protocol.startswith("SASL_"):
            assert self.sasl_plain_password is not None  # _sasl_complete
            settings |= {"sasl_mechanism": self.sasl_mechanism,
                         "sasl_plain_username": self.sasl_plain_username,
                         "sasl_plain_password": self.sasl_plain_password.get_secret_value()}
        if self.security_protocol.endswith("SSL"):
            settings["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path: Path | None = getattr(self, name)
                if path is not None:
                    settings[name] = str(path)
            if self.ssl_password is not None:
                settings["ssl_password"] = self.ssl_password.get_secret_value()
        return settings

    @field_validator("topic_prefix")
    @classmethod
    def _legal_prefix(cls, value: str) -> str:
        if value and not _LEGAL.match(value):
            raise ValueError("may hold only ASCII letters, digits, '.', '_' and '-'")
        return value

    @field_validator("group_id", "transactional_id_prefix", "instance_id", "client_id")
    @classmethod
    def _legal_id(cls, value: str | None) -> str | None:
        if value is not None and not _LEGAL.match(value):
            raise ValueError("may hold only ASCII letters, digits, '.', '_' and '-'")
        return value

    @property
    def txn_prefix(self) -> str:
        return self.transactional_id_prefix or self.group_id

    def partition_txn_id(self, partition: int) -> str:
        return f"{self.txn_prefix}-{partition}"

    @property
    def commands_txn_id(self) -> str:
        return f"{self.txn_prefix}-commands"

    @property
    def audit_partitions(self) -> int:
        return self.partitions + 1

    @property
    def commands_audit_partition(self) -> int:
        """The audit chain of commands (access, control, tombstones): the last partition."""
        return self.partitions


@dataclass(frozen=True)
class TopicNames:
    prefix: str

    def ingress(self, event_type: str) -> str:
        return f"{self.prefix}ingress.{event_type}"

    @property
    def store(self) -> str:
        return f"{self.prefix}store"

    def egress(self, recipient: str, purpose: str) -> str:
        return f"{self.prefix}egress.{recipient}.{purpose}"

    @property
    def quarantine(self) -> str:
        return f"{self.prefix}quarantine"

    @property
    def revisions(self) -> str:
        return f"{self.prefix}revisions"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    @property
    def control(self) -> str:
        return f"{self.prefix}control"

    @property
    def expiry(self) -> str:
        return f"{self.prefix}expiry"

    @property
    def keys(self) -> str:
        return f"{self.prefix}keys"

    def event_type_of_ingress(self, topic: str) -> str:
        return topic[len(self.ingress("")):]



def store_position(offset: int, partition: int, partitions: int) -> int:
    """The store position of the record at `offset` of store partition `partition`."""
    return offset * partitions + partition


def split_position(position: int, partitions: int) -> tuple[int, int]:
    """(offset, partition) of a store position."""
    return divmod(position, partitions)


def topic_problem(name: str) -> str | None:
    """Why `name` cannot be a Kafka topic, or None."""
    if not _LEGAL.match(name):
        return "may hold only ASCII letters, digits, '.', '_' and '-'"
    if len(name) > MAX_TOPIC_LENGTH:
        return f"is longer than {MAX_TOPIC_LENGTH} characters"
    return None
