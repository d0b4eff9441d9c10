"""Issue 11: no import runs back up. A backend depends on the core (broker/pipeline/core.py's
PipelineCore), never on the application, the CLI or the web layer."""

from __future__ import annotations

import ast
from pathlib import Path

import broker

UPPER = ("broker.app", "broker.cli", "broker.web")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return out


def test_no_backend_module_imports_the_app_the_cli_or_the_web_layer() -> None:
    root = Path(broker.__file__).parent / "backends"
    upward = {f"{path.relative_to(root)}: {name}" for path in sorted(root.rglob("*.py"))
              for name in _imports(path) if name.startswith(UPPER)}
    assert upward == set()
