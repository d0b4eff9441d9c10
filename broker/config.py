"""Configuration: one validated file plus environment overrides, resolved once at start.

Precedence, lowest first: defaults, the config file (--config or COVENANT_BROKER_CONFIG),
environment variables COVENANT_BROKER_<KEY> (nested keys joined by __), then CLI flags.
Unknown keys and bad values are refused with the file and the key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from broker.errors import ConfigError

ENV_PREFIX = "COVENANT_BROKER_"
_REPO = Path(__file__).resolve().parent.parent


def _default_dir(name: str) -> Path:
    """schemas/ and policies/ beside the package (a checkout), else in the working directory."""
    beside = _REPO / name
    return beside if beside.is_dir() else Path.cwd() / name


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_string_bytes: PositiveInt = 16 * 1024
    max_event_bytes: PositiveInt = 256 * 1024


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    data_dir: Path = Path("data")
    schemas_dir: Path = Field(default_factory=lambda: _default_dir("schemas"))
    policy: Path | None = Field(default=None, description="covenant file; default: the only "
                                "*.yaml in policies/")
    backend: Literal["embedded", "kafka"] = "embedded"
    limits: LimitsConfig = LimitsConfig()
    decide_batch_size: PositiveInt = 500
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
        node[parts[-1]] = value
    return out


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
    origin = "defaults"
    config_file = config_file or (Path(environ[ENV_PREFIX + "CONFIG"])
                                  if environ.get(ENV_PREFIX + "CONFIG") else None)
    if config_file is not None:
        origin = str(config_file)
        try:
            loaded = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{config_file}: cannot be read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{config_file}: not valid YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{config_file}: expected a mapping of settings")
        data = loaded
    env = _env_overrides(environ)
    if env:
        origin += " + environment"
    data = _merge(_merge(data, env), overrides or {})
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"{origin}:{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                 for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None
