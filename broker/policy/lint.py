"""`policy check`: every problem in a covenant file, or in every covenant file of a folder,
as `file:key: problem` lines.

Structure and references come from the loader; the schema facts (field paths, transforms
that fit their fields, view files that match the rules) from compiling the plans with
throwaway keys, so a check never creates key files.
"""

from __future__ import annotations

import json
from pathlib import Path

from broker.config import Settings
from broker.errors import CovenantError, InputError, SchemaError
from broker.model.schemas import SchemaRegistry
from broker.policy.covenant import Covenant, load_covenant
from broker.policy.plan import compile_plans
from broker.policy.views import ViewError, derive_view


def _dummy_key(purpose: str) -> bytes:
    return b"\0" * 32


def lint(path: Path, schemas_dir: Path) -> list[str]:
    try:
        covenant = load_covenant(path)
    except CovenantError as exc:
        return exc.problems
    try:
        registry = SchemaRegistry(schemas_dir)
    except SchemaError as exc:
        return [f"{path}:<schemas>: {exc}"]
    problems: list[str] = []
    try:
        compile_plans(covenant, registry, _dummy_key, str(path))
    except CovenantError as exc:
        problems.extend(exc.problems)
    problems.extend(_unused(path, covenant))
    return problems


COVENANT_SUFFIXES = (".yaml", ".yml")


def covenant_files(path: Path) -> list[Path]:
    """`path` itself, or every covenant file (*.yaml, *.yml) directly in the folder `path`,
    in name order. A folder without one is an InputError: there is nothing to check."""
    if not path.is_dir():
        return [path]
    found = sorted(p for p in path.iterdir()
                   if p.suffix.lower() in COVENANT_SUFFIXES and p.is_file())
    if not found:
        raise InputError(f"{path}: no covenant file (*.yaml, *.yml) in this folder")
    return found


def lint_all(path: Path, schemas_dir: Path) -> dict[Path, list[str]]:
    """Each covenant file `path` names (itself, or those in the folder) -> its problems."""
    return {file: lint(file, schemas_dir) for file in covenant_files(path)}


def _unused(path: Path, covenant: Covenant) -> list[str]:
    used = {name for p in covenant.purposes.values() for name in p.recipient_names()}
    return [f"{path}:recipients.{name}: listed but no purpose releases anything to it"
            for name in covenant.recipients if name not in used]


def write_views(settings: Settings, write: bool) -> list[str]:
    """Derive every purpose's view schema; with write, (re)write schemas/views/*.avsc."""
    covenant = load_covenant(settings.policy_file())
    registry = SchemaRegistry(settings.schemas_dir)
    out = []
    for name, purpose in covenant.purposes.items():
        try:
            view = derive_view(name, purpose, registry.get(purpose.event_type))
        except (ViewError, SchemaError) as exc:
            out.append(f"{name}: {exc}")
            continue
        target = settings.schemas_dir / "views" / f"{purpose.view.rpartition('.')[2]}.avsc"
        text = json.dumps(view, indent=2) + "\n"
        if write:
            target.write_text(text, encoding="utf-8")
            out.append(f"wrote {target}")
        else:
            out.append(f"{target}:\n{text}")
    return out
