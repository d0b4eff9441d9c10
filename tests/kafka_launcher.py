"""Loads ``deploy/kafka/launcher.py`` (a script, not a package module) once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

LAUNCHER_PATH = Path(__file__).resolve().parents[1] / "deploy" / "kafka" / "launcher.py"
MODULE_NAME = "covenant_kafka_launcher"


def load_launcher() -> ModuleType:
    """The launcher module; raises ImportError with the path when it cannot be loaded."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    spec = importlib.util.spec_from_file_location(MODULE_NAME, LAUNCHER_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the Kafka launcher from {LAUNCHER_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module
    spec.loader.exec_module(module)
    return module
