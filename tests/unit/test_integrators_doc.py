"""docs/integrators.md's generated tables are what the broker says: the fingerprints equal
`schemas list`, the topic table equals `kafka init`'s layout for the default config."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from broker import cli
from broker.backends.kafka import acl
from broker.backends.kafka.describe import describe_layout
from broker.config import load_settings
from broker.model.schemas import SchemaRegistry
from broker.policy.covenant import load_covenant

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "integrators.md").read_text(encoding="utf-8")


def _block(name: str) -> list[str]:
    found = re.search(rf"<!-- {name}:begin.*?-->\n(.*?)<!-- {name}:end -->", DOC, re.S)
    assert found is not None, f"docs/integrators.md has no {name} block"
    return [line for line in found.group(1).splitlines()[2:] if line.strip()]  # no header


def _code(text: str) -> str:
    return text.strip().strip("`")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("COVENANT_BROKER_")]:
        monkeypatch.delenv(key)


def test_the_fingerprint_table_is_what_schemas_list_prints(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--json", "schemas", "list"]) == 0
    listed = json.loads(capsys.readouterr().out)["schemas"]
    expected = [(e["name"], e["fingerprint"], e["version"]) for e in listed
                if e["kind"] in ("events", "views")]
    documented = [tuple(_code(cell) for cell in line.strip("|").split("|"))
                  for line in _block("fingerprints")]
    assert documented == expected, "\n".join(
        f"| {n} | `{fp}` | {v} |" for n, fp, v in expected)


def test_the_topic_table_is_the_layout_kafka_init_prints() -> None:
    settings = load_settings(overrides={"backend": "kafka"}, environ={})
    covenant = load_covenant(settings.policy_file())
    registry = SchemaRegistry(settings.schemas_dir)
    layout = acl.covenant_layout(settings.kafka, covenant, registry.event_types())
    rows = describe_layout(layout, covenant, registry, acl.plan_acls(covenant, layout))

    def who(principals: list[str]) -> str:
        return ", ".join(p.removeprefix("User:") for p in principals)

    expected = [f"| `{r.topic}` | {r.partitions} | {r.schema or r.value} | "
                + (f"`{r.fingerprint}`" if r.fingerprint else "")
                + f" | {who(r.writers)} | {who(r.readers)} |" for r in rows]
    assert _block("topics") == expected, "\n".join(expected)
