"""Metrics scrape: what the embedded pipeline released, withheld and quarantined is what
/metrics says, with no personal data in any label; and the HTTP endpoints answer."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections import Counter
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from broker.app.service import Broker
from broker.clock import parse_instant
from broker.metrics import BrokerMetrics, Health, MetricsServer, parse_listen
from tests import factories as f

NOW = parse_instant("2026-05-10T12:00:00Z")
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(broker: Broker) -> tuple[str, Samples]:
    text = generate_latest(broker.metrics.registry).decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def by_label(samples: Samples, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(dict(k)[label] for label in labels): v
            for (n, k), v in samples.items() if n == name and v}


def audit_entries(broker: Broker) -> list[dict[str, Any]]:
    schema = broker.registry.get("records.audit_entry")
    return [schema.decode(data) for _, data in broker.log.audit_rows()]


def test_counters_match_what_the_pipeline_did(broker: Broker) -> None:
    good = [f.woninginbraak(address={"wijk": "oost"}), f.woninginbraak(address={"wijk": "west"})]
    bad: list[dict[str, Any] | str] = ["not json at all", '{"event_id": 1}']
    report = broker.ingest("politie", "politie.woninginbraak", f.lines(*good, *bad), NOW)
    assert report.accepted == 2
    assert len(report.quarantined) == 2
    delivered = broker.consume("boa-hor-oost", None, 0, NOW)

    text, samples = scrape(broker)
    assert by_label(samples, "covenant_events_in_total", "event_type") == \
        {("politie.woninginbraak",): 4.0}
    assert by_label(samples, "covenant_quarantined_total", "reason_code") == \
        dict(Counter((q.reason_code,) for q in report.quarantined))

    entries = audit_entries(broker)
    decided = [e for e in entries if e["name"] == "decide"]
    released = Counter((e["purpose"], e["recipient"]) for e in decided
                       if e["decision"] == "release")
    withheld = Counter((e["reason_code"],) for e in decided if e["decision"] == "withhold")
    assert released  # the input exercises both
    assert withheld
    assert {(p, r): v for (p, r, _), v in by_label(
        samples, "covenant_released_total", "purpose", "recipient", "kind").items()} == released
    assert by_label(samples, "covenant_withheld_total", "reason_code") == withheld
    assert report.decided.released == sum(released.values())
    assert report.decided.withheld == sum(withheld.values())
    assert len([d for d in delivered if d.purpose in {p for p, _ in released}]) >= 1

    assert samples[("covenant_audit_entries_total", ())] == len(entries)
    assert samples[("covenant_decide_latency_seconds_count", ())] == report.decided.events == 2
    # labels hold covenant names and codes only: no event id, no field value, no reason text
    for event in good:
        assert event["event_id"] not in text
        assert event["address"]["street"] not in text
    for q in report.quarantined:
        assert q.reason not in text


def test_checkpoint_age_is_nan_before_one_and_a_number_after() -> None:
    metrics = BrokerMetrics()
    assert metrics._checkpoint_age() != metrics._checkpoint_age()  # NaN
    metrics.observe_checkpoint(1_000)
    assert metrics._checkpoint_age() > 0


def test_two_brokers_do_not_share_counters(make_broker: Any, tmp_path: Any) -> None:
    first = make_broker()
    second = make_broker(data_dir=tmp_path / "other")
    first.ingest("politie", "politie.woninginbraak", f.lines("garbage"), NOW)
    _, samples = scrape(second)
    assert not by_label(samples, "covenant_quarantined_total", "reason_code")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_http_endpoints_answer(broker: Broker) -> None:
    broker.ingest("politie", "politie.woninginbraak", f.lines("garbage"), NOW)
    health = Health()
    server = MetricsServer("127.0.0.1:0", broker.metrics, health)  # a free port
    try:
        assert _get(server.port, "/healthz") == (200, "ok\n")
        assert _get(server.port, "/readyz") == (503, "no partitions assigned\n")
        health.assigned = True
        assert _get(server.port, "/readyz") == (503, "the last poll failed\n")
        health.last_poll_ok = True
        assert _get(server.port, "/readyz") == (200, "ready\n")
        status, body = _get(server.port, "/metrics")
        assert status == 200
        assert 'covenant_events_in_total{event_type="politie.woninginbraak"} 1.0' in body
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.close()


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)), (":9464", ("127.0.0.1", 9464)),
    ("[::1]:80", ("::1", 80))])
def test_parse_listen(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize("value", ["9464", "host:", "host:port", "h:70000"])
def test_parse_listen_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(value)
