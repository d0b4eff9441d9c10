"""Configuration: one validated file plus environment overrides, resolved once at start.

Precedence, lowest first: defaults, the config file (--config or COVENANT_BROKER_CONFIG),
environment variables COVENANT_BROKER_<KEY> (nested keys joined by __), then CLI flags.
Unknown keys and bad values are refused with the file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from broker.config.kafka import KafkaConfig
from broker.config.yaml_file import YamlFileError, load_yaml_file
from broker.errors import ConfigError

ENV_PREFIX = "COVENANT_BROKER_"
_REPO = Path(__file__).resolve().parents[2]


def _default_dir(name: str) -> Path:
    """schemas/ and policies/ beside the package (a checkout), else in the working directory."""
    beside = _REPO / name
    return beside if beside.is_dir() else Path.cwd() / name


# Upper bounds: a limit is there to bound memory and storage per input, so a config that
# sets it to "anything" (a typo of a few zeros) is refused rather than obeyed.
MAX_STRING_BYTES_BOUND = 1024 * 1024
MAX_EVENT_BYTES_BOUND = 16 * 1024 * 1024
MAX_CLOCK_SKEW_S_BOUND = 3600
MAX_BATCH_BOUND = 100_000


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_string_bytes: PositiveInt = Field(
        default=16 * 1024, le=MAX_STRING_BYTES_BOUND,
        description="bytes of one string field; at most 1 MiB")
    max_event_bytes: PositiveInt = Field(
        default=256 * 1024, le=MAX_EVENT_BYTES_BOUND,
        description="bytes of one raw input; at most 16 MiB")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    public_key: Path | None = Field(
        default=None, description="Ed25519 public key (PEM): when set, every event of the "
        "source must carry its valid signature, else it is quarantined")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path("data")
    schemas_dir: Path = Field(default_factory=lambda: _default_dir("schemas"))
    policy: Path | None = Field(default=None, description="covenant file; default: the only "
                                "*.yaml in policies/")
    backend: Literal["embedded", "kafka"] = "embedded"
    limits: LimitsConfig = LimitsConfig()
    kafka: KafkaConfig = KafkaConfig()  # used when backend is "kafka"
    sources: dict[str, SourceConfig] = Field(
        default_factory=dict, description="per covenant source: optional public_key")
    max_clock_skew_s: PositiveInt = Field(
        default=300, le=MAX_CLOCK_SKEW_S_BOUND,
        description="how far an instant that records when something happened (x-past in "
        "the schema) may lie after the ingest time before the event is quarantined as "
        "from_the_future; at most 3600")
    decide_batch_size: PositiveInt = Field(default=500, le=MAX_BATCH_BOUND,
                                           description="at most 100000")
    data_key_cache: PositiveInt = Field(
        default=20_000, le=10_000_000,
        description="unwrapped data keys one process keeps in memory, the least recently "
        "used evicted first (about 150 bytes each), besides those created and not yet "
        "stored; a destroyed key is dropped at once. At most 10000000")
    default_retention_days: PositiveInt = Field(
        default=30, description="data keys of event types no purpose uses")
    quarantine_retention_days: PositiveInt = Field(
        default=30, description="how long quarantined input stays readable")
    audit_log_id: str | None = Field(
        default=None, pattern=r"^[^\s+]+$",
        description="checkpoint origin and key name; default covenant-broker/<covenant id>")
    audit_checkpoint_every_entries: PositiveInt = 1000
    audit_checkpoint_every_seconds: float = Field(default=60.0, gt=0)
    log_level: Literal["debug", "info", "warning", "error"] = "warning"
    log_format: Literal["json", "console"] = "json"

    def policy_file(self) -> Path:
        if self.policy is not None:
            return self.policy
        directory = _default_dir("policies")
        found = sorted(directory.glob("*.yaml"))
        if len(found) != 1:
            raise ConfigError(f"{directory}: expected exactly one covenant *.yaml, found "
                              f"{len(found)}; set `policy` in the config or pass --policy")
        return found[0]


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        parts = key[len(ENV_PREFIX):].lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment {key}: {ENV_PREFIX}{part.upper()} is also "
                                  f"set, to a single value; set one or the other")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"environment {key}: {'.'.join(parts)} is a section; set its "
                              f"keys as {key}__<KEY>")
        node[parts[-1]] = value
    return out


def env_variable(loc: tuple[Any, ...]) -> str:
    """The environment variable that sets a (nested) key: limits.max_string_bytes ->
    COVENANT_BROKER_LIMITS__MAX_STRING_BYTES."""
    return ENV_PREFIX + "__".join(str(p) for p in loc).upper()


def _set_by(loc: tuple[Any, ...], sources: list[tuple[str, dict[str, Any]]]) -> str:
    """Which source (the last one wins) set the key at `loc`, to name it in an error."""
    for name, values in reversed(sources):
        node: Any = values
        for part in loc:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return f"environment {env_variable(loc)}" if name == "environment" else name
    return sources[0][0] if sources else "defaults"


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(config_file: Path | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    environ = dict(os.environ) if environ is None else environ
    data: dict[str, Any] = {}
    config_file = config_file or (Path(environ[ENV_PREFIX + "CONFIG"])
                                  if environ.get(ENV_PREFIX + "CONFIG") else None)
    if config_file is not None:
        try:  # bounded read, no aliases, no key written twice (see yaml_file)
            loaded = load_yaml_file(config_file)[1] or {}
        except YamlFileError as exc:
            raise ConfigError(str(exc)) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: expected a mapping of settings")
        data = loaded
    env = _env_overrides(environ)
    data_file, data = data, _merge(_merge(data, env), overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        sources = [(str(config_file) if config_file else "defaults", data_file),
                   ("environment", env), ("command line", overrides or {})]
        lines = [f"{_set_by(e['loc'], sources)}:{'.'.join(str(p) for p in e['loc'])}: "
                 f"{e['msg']}" for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
