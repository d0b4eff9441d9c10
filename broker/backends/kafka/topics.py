"""The topics of the Kafka backend: derived from the covenant and config, created and checked.

Every command that talks to Kafka first runs `ensure_topics`: missing topics are created,
and existing ones must have the partition count and the configs the design relies on
(an immutable store and audit log, a compacted expiry index and key topic, compacted and
time-limited egress topics). A mismatch stops the command with a ConfigError naming the
topic, the setting and both values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource, ConfigResourceType

from broker.backends.kafka.errors import kafka_errors
from broker.config.kafka import KafkaConfig, TopicNames, topic_problem
from broker.errors import ConfigError
from broker.policy.plan import PlanSet

UNKNOWN_TOPIC = 3
TOPIC_EXISTS = 36
KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
COMPACTED = {"cleanup.policy": "compact"}
DAY_MS = 86_400_000
EGRESS_CHECKED = ("cleanup.policy",)


def egress_topic_configs(retention_days: int, segment_ms: int) -> dict[str, str]:
    """An egress topic: compacted by ref, so a tombstone (expiry, erasure) removes the
    record it ends once the cleaner ran, and deleted by time after the purpose's retention.

    The cleaner never touches the active segment, so ``segment.ms`` (and
    ``max.compaction.lag.ms``, the same) bounds how long an ended record's bytes stay in the
    segment files once the stream has another append; docs/kafka-retention.md gives the
    whole window. Tombstones (a ref and headers, nothing personal) stay as long as the
    records could, so a recipient that reads within the retention sees every deletion.
    """
    retention = str(retention_days * DAY_MS)
    return {"cleanup.policy": "compact,delete", "retention.ms": retention,
            "retention.bytes": "-1", "delete.retention.ms": retention,
            "segment.ms": str(segment_ms), "max.compaction.lag.ms": str(segment_ms),
            "min.compaction.lag.ms": "0", "min.cleanable.dirty.ratio": "0.01",
            "file.delete.delay.ms": "1000"}


def key_topic_configs(segment_ms: int) -> dict[str, str]:
    """The data key topic: compacted, and cleaned soon after a key's tombstone, so a
    destroyed wrapped key leaves the log files (broker/backends/kafka/keys.py says how
    soon). Tombstones themselves stay a day: they hold a key id, no key material."""
    return {"cleanup.policy": "compact", "segment.ms": str(segment_ms),
            "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0",
            "max.compaction.lag.ms": str(segment_ms), "file.delete.delay.ms": "1000",
            "delete.retention.ms": str(24 * 3600 * 1000)}


class TopicMismatchError(ConfigError):
    """Topics that exist with settings the configuration does not give them: a finding
    (`kafka init` exits 1 with each difference) rather than a command that cannot run."""

    def __init__(self, problems: list[str], created: list[str] | None = None) -> None:
        self.problems = list(problems)
        self.created = list(created or [])  # the missing topics were created all the same
        super().__init__("Kafka topics do not match the configuration:\n"
                         + "\n".join(problems))


@dataclass(frozen=True)
class TopicSpec:
    name: str
    role: str
    partitions: int
    configs: dict[str, str] = field(default_factory=dict)  # created with these
    checked: tuple[str, ...] = ()  # config keys that must hold the created value
    setting: str = "kafka.partitions"  # the setting that decides the partition count


@dataclass(frozen=True)
class Layout:
    """Every topic of one deployment, and how to find each kind."""

    cfg: KafkaConfig
    names: TopicNames
    event_types: tuple[str, ...]
    streams: tuple[tuple[str, str], ...]  # (recipient, purpose) of every plan
    expiring_streams: tuple[tuple[str, str], ...]  # streams whose records can expire
    # (recipient, purpose, view's Avro full name, retention days) of every stream
    stream_views: tuple[tuple[str, str, str, int], ...] = ()

    @classmethod
    def build(cls, cfg: KafkaConfig, event_types: list[str], plans: PlanSet) -> Layout:
        streams = sorted({(p.recipient, p.purpose) for p in plans.all})
        expiring = sorted({(p.recipient, p.purpose) for p in plans.all if p.expires_after})
        views = sorted({(p.recipient, p.purpose, p.view_schema.name, p.retention_days)
                        for p in plans.all})
        return cls(cfg, TopicNames(cfg.topic_prefix), tuple(sorted(event_types)),
                   tuple(streams), tuple(expiring), tuple(views))

    def view_of(self, recipient: str, purpose: str) -> str:
        """The Avro full name of the view a stream carries."""
        for r, p, view, _ in self.stream_views:
            if (r, p) == (recipient, purpose):
                return view
        raise KeyError(f"no stream {recipient}/{purpose} in the topic layout")

    def retention_days(self, recipient: str, purpose: str) -> int | None:
        for r, p, _, days in self.stream_views:
            if (r, p) == (recipient, purpose):
                return days
        return None

    def ingress_topics(self) -> list[str]:
        return [self.names.ingress(t) for t in self.event_types]

    def stream_of(self, topic: str) -> tuple[str, str] | None:
        return self._streams_by_topic().get(topic)

    def _streams_by_topic(self) -> dict[str, tuple[str, str]]:
        return {self.names.egress(r, p): (r, p) for r, p in self.streams}

    def all_topics(self) -> list[str]:
        return [s.name for s in self.specs()]

    def specs(self) -> list[TopicSpec]:
        cfg, names = self.cfg, self.names
        keep = tuple(KEEP_FOREVER)
        out: list[TopicSpec] = []
        for event_type in self.event_types:
            out.append(TopicSpec(names.ingress(event_type), "ingress", cfg.partitions,
                                 {"retention.ms": str(cfg.ingress_retention_ms),
                                  "segment.ms": str(cfg.ingress_segment_ms)}))
        out.append(TopicSpec(names.store, "store", cfg.partitions, KEEP_FOREVER, keep))
        for recipient, purpose in self.streams:
            days = self.retention_days(recipient, purpose)
            configs = KEEP_FOREVER if days is None else egress_topic_configs(
                days, cfg.egress_segment_ms)
            out.append(TopicSpec(names.egress(recipient, purpose), "egress", 1, configs,
                                 keep if days is None else EGRESS_CHECKED,
                                 setting="(fixed: one partition per stream)"))
        out.append(TopicSpec(names.quarantine, "quarantine", cfg.partitions, KEEP_FOREVER,
                             keep))
        # corrections and withdrawals, on the partition of the event they revise, beside
        # the store (which keeps one record per event id); kept as long as the store
        out.append(TopicSpec(names.revisions, "revisions", cfg.partitions, KEEP_FOREVER,
                             keep))
        out.append(TopicSpec(names.audit, "audit", cfg.audit_partitions, KEEP_FOREVER, keep,
                             setting="kafka.partitions (+1 for the commands chain)"))
        out.append(TopicSpec(names.control, "control", 1, KEEP_FOREVER, keep,
                             setting="(fixed: one partition)"))
        out.append(TopicSpec(names.expiry, "expiry", 1, COMPACTED, tuple(COMPACTED),
                             setting="(fixed: one partition)"))
        out.append(TopicSpec(names.keys, "keys", 1, key_topic_configs(cfg.keys_segment_ms),
                             tuple(COMPACTED), setting="(fixed: one partition)"))
        return out


def ensure_topics(admin: KafkaAdminClient, layout: Layout) -> list[str]:
    """Create missing topics, check existing ones; return the names created."""
    specs = layout.specs()
    bad_names = [f"topic {s.name}: {problem}" for s in specs
                 if (problem := topic_problem(s.name)) is not None]
    if bad_names:
        raise ConfigError("kafka.topic_prefix / covenant names:\n" + "\n".join(bad_names))
    by_name = {s.name: s for s in specs}
    with kafka_errors("describing topics"):
        described = admin.describe_topics(list(by_name))
    missing = [t["name"] for t in described if t["error_code"] == UNKNOWN_TOPIC]
    created: list[str] = []
    if missing:
        created = _create(admin, [by_name[n] for n in missing], layout.cfg.replication_factor)
        with kafka_errors("describing topics"):
            described = admin.describe_topics(list(by_name))
    problems = [f"topic {t['name']}: cannot be described (error code {t['error_code']})"
                for t in described if t["error_code"] not in (0,)]
    for topic in described:
        spec = by_name.get(topic["name"])
        if spec is None or topic["error_code"] != 0:
            continue
        found = len(topic["partitions"])
        if found != spec.partitions:
            problems.append(f"topic {spec.name} ({spec.role}) has {found} partitions, the "
                            f"config needs {spec.partitions} ({spec.setting}); the partition "
                            "count cannot change once the topic holds data")
    problems += _check_configs(admin, [s for s in specs if s.checked])
    if problems:
        raise TopicMismatchError(problems, created)
    return created


def _create(admin: KafkaAdminClient, specs: list[TopicSpec], replication: int) -> list[str]:
    request = {s.name: {"num_partitions": s.partitions, "replication_factor": replication,
                        "configs": dict(s.configs)} for s in specs}
    with kafka_errors("creating topics"):
        result = admin.create_topics(request, raise_errors=False)
    created, problems = [], []
    for topic in result["topics"]:
        if topic["error_code"] == 0:
            created.append(topic["name"])
        elif topic["error_code"] != TOPIC_EXISTS:  # another process won the race: fine
            problems.append(f"topic {topic['name']}: cannot be created: "
                            f"{topic.get('error_message') or topic['error_code']}")
    if problems:
        raise ConfigError("\n".join(problems))
    if created:
        with kafka_errors("waiting for new topics"):
            admin.wait_for_topics(created, timeout_ms=30_000)
    return created


def _check_configs(admin: KafkaAdminClient, specs: list[TopicSpec]) -> list[str]:
    if not specs:
        return []
    resources = [ConfigResource(ConfigResourceType.TOPIC, s.name, dict.fromkeys(s.checked))
                 for s in specs]
    with kafka_errors("describing topic configs"):
        found = admin.describe_configs(resources, config_filter="all").get("topic", {})
    problems = []
    for spec in specs:
        values = found.get(spec.name, {})
        for key in spec.checked:
            have = values.get(key, {}).get("value")
            if have != spec.configs[key]:
                problems.append(f"topic {spec.name} ({spec.role}): {key} is {have}, the design "
                                f"needs {spec.configs[key]}")
    return problems
