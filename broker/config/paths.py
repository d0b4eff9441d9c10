"""What the settings' types cannot check: the paths they name must exist as what they are.

`config check` reports these (exit 2, one `key: path: problem` line each); a command that
loads the settings finds the same problems when it opens the path.
"""

from __future__ import annotations

from broker.config import Settings
from broker.errors import ConfigError


def path_problems(settings: Settings) -> list[str]:
    """What pydantic cannot see: the directories and the covenant file must exist."""
    problems = []
    if not settings.schemas_dir.is_dir():
        problems.append(f"schemas_dir: {settings.schemas_dir}: not a directory")
    if settings.data_dir.exists() and not settings.data_dir.is_dir():
        problems.append(f"data_dir: {settings.data_dir}: exists and is not a directory")
    try:
        policy = settings.policy_file()
    except ConfigError as exc:
        problems.append(f"policy: {exc}")
    else:
        if not policy.is_file():
            problems.append(f"policy: {policy}: no such file")
    for name, source in settings.sources.items():  # an Ed25519 PEM, checked when loaded
        if source.public_key is not None and not source.public_key.is_file():
            problems.append(f"sources.{name}.public_key: {source.public_key}: no such file")
    return problems
