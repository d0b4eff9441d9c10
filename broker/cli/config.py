"""`covenant-broker config check`: the effective settings, or every problem with its key.

It loads the settings exactly as every other command does (defaults, the config file,
COVENANT_BROKER_* environment variables, command-line flags), then checks that the paths
they name exist (broker/config/paths.py); on Kafka it lists the topic names the config
and covenant imply (`kafka init` creates them). Exit 0 with the effective settings, secrets
masked; exit 2 with one `where:key: problem` line per problem.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from broker.config import ENV_PREFIX, Settings
from broker.config.paths import path_problems
from broker.errors import ConfigError, CovenantError, SchemaError

EXIT_OK, EXIT_ERROR = 0, 2
SECRET = "[secret]"  # noqa: S105 - the mask shown in place of a secret
_SECRET_KEY = re.compile(r"password|secret|token|credential|private|sasl_plain", re.IGNORECASE)


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 global_options: Callable[[argparse.ArgumentParser, bool], None]) -> None:
    config = command("config", "configuration tools")
    commands = config.add_subparsers(dest="config_command", required=True)
    check = commands.add_parser(
        "check", help="validate the config file and environment overrides; print the "
        "effective settings (exit 0) or each problem with its key (exit 2)")
    global_options(check, True)


def _refused(args: argparse.Namespace, problems: list[str]) -> int:
    """Each problem, on stderr or in the JSON answer: the config could not be used."""
    if args.json:
        print(json.dumps({"ok": False, "problems": problems}))
    else:
        print("\n".join(problems), file=sys.stderr)
    return EXIT_ERROR


def effective(settings: Settings) -> dict[str, Any]:
    """The settings as JSON values; secrets (by type or by key name) masked."""
    values = settings.model_dump(mode="json")
    if values.get("policy") is None:
        with contextlib.suppress(ConfigError):  # path_problems reports it
            values["policy"] = str(settings.policy_file())
    masked: dict[str, Any] = _masked(values)
    return masked


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: SECRET if _SECRET_KEY.search(k) and value[k] is not None
                else _masked(value[k]) for k in value}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return SECRET if value == "**********" else value  # pydantic's SecretStr in JSON mode


def _flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out


def cmd_config(args: argparse.Namespace,
               load: Callable[[argparse.Namespace], Settings]) -> int:
    environment = sorted(k for k in os.environ if k.startswith(ENV_PREFIX))
    try:
        settings = load(args)
    except ConfigError as exc:
        problems = str(exc).splitlines()
    else:
        problems = path_problems(settings)
    if problems:
        return _refused(args, problems)
    values = effective(settings)
    try:
        topics = topic_names(settings)
    except CovenantError as exc:
        problems = exc.problems
    except (ConfigError, SchemaError) as exc:
        problems = str(exc).splitlines()
    if problems:
        return _refused(args, problems)
    config_file = args.config or os.environ.get(ENV_PREFIX + "CONFIG")
    if args.json:
        payload = {"ok": True, "config_file": str(config_file) if config_file else None,
                   "environment": environment, "settings": values}
        if topics is not None:
            payload["topics"] = topics
        print(json.dumps(payload))
        return EXIT_OK
    print(f"config file: {config_file or 'none (defaults)'}")
    print(f"environment overrides: {', '.join(environment) or 'none'}")
    for key, value in _flatten(values):
        print(f"{key} = {json.dumps(value)}")
    if topics is not None:
        print(f"kafka topics ({len(topics)}; `covenant-broker kafka init` creates them):")
        for topic in topics:
            print(f"  {topic}")
    return EXIT_OK


def topic_names(settings: Settings) -> list[str] | None:
    """On Kafka, every topic name the config and covenant imply (no connection); else None."""
    if settings.backend != "kafka":
        return None
    # kafka-python only for a Kafka config
    from broker.backends.kafka.acl import covenant_layout  # noqa: PLC0415
    from broker.model.schemas import SchemaRegistry  # noqa: PLC0415
    from broker.policy.covenant import load_covenant  # noqa: PLC0415

    layout = covenant_layout(settings.kafka, load_covenant(settings.policy_file()),
                             SchemaRegistry(settings.schemas_dir).event_types())
    return layout.all_topics()
