"""Contract of the recipient delivery API: auth, own streams only, offsets, long-poll, acks,
and the audit: every read exactly one access entry with its range; every refusal audited."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastavro.schema import fingerprint as fastavro_fingerprint

from broker.model.schemas import SchemaRegistry
from tests import factories as f
from tests.unit.web_support import NOW, Web, open_web

REPO = Path(__file__).resolve().parents[2]
SURVEILLANCE = "surveillance-woninginbraak"
SURVEILLANCE_ACTIVITY = "urn:nl:amstelveen-veiligheid:v1:verwerkingsactiviteit:" + SURVEILLANCE
BAN = "handhaving-gebiedsverbod"
RECORDS = f"/v1/streams/{SURVEILLANCE}/records"
ENDPOINTS = [("get", "/v1/streams", None), ("get", RECORDS, None),
             ("post", f"/v1/streams/{SURVEILLANCE}/ack", {"offset": 0}),
             ("get", "/v1/schemas/0000000000000000", None)]


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from open_web(tmp_path / "data")


def accesses(web: Web) -> list[dict[str, object]]:
    return web.audit(name="access")


# -- authentication -----------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_no_token_is_401_with_a_bearer_challenge(web: Web, method: str, path: str,
                                                 body: object) -> None:
    before = len(accesses(web))
    answer = web.client.request(method, path, json=body)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert answer.json() == {"detail": "an API token is required"}
    assert len(accesses(web)) == before


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
@pytest.mark.parametrize("header", ["Bearer cbt_not-a-real-token", "Bearer ", "Basic Zm9vOmJhcg==",
                                    "Bearer " + "x" * 5000])
def test_a_wrong_token_is_401(web: Web, method: str, path: str, body: object,
                              header: str) -> None:
    answer = web.client.request(method, path, json=body, headers={"Authorization": header})
    assert answer.status_code == 401


def test_a_revoked_token_is_401(web: Web) -> None:
    headers = web.token("boa-hor-noord")
    assert web.client.get("/v1/streams", headers=headers).status_code == 200
    token_id = web.app.state.web_state.tokens()[-1].token_id
    assert web.app.state.web_state.revoke_token(token_id, 1)
    assert web.client.get("/v1/streams", headers=headers).status_code == 401


def test_tokens_are_stored_only_as_hashes(web: Web) -> None:
    headers = web.token("boa-hor-noord")
    token = headers["Authorization"].removeprefix("Bearer ")
    stored = (web.data_dir / "web.db").read_bytes()
    assert token.encode() not in stored
    assert token.removeprefix("cbt_").encode() not in stored


# -- the caller's streams -----------------------------------------------------------------------

def test_streams_lists_the_callers_purposes_with_offsets(web: Web) -> None:
    answer = web.client.get("/v1/streams", headers=web.token("boa-hor-noord"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["recipient"] == "boa-hor-noord"
    streams = {s["purpose"]: s for s in body["streams"]}
    assert set(streams) == {SURVEILLANCE, BAN}
    assert streams[SURVEILLANCE]["next_offset"] == 2
    assert streams[BAN]["next_offset"] == 1
    assert streams[SURVEILLANCE]["legal_basis"].startswith("Wpg art. 20")
    assert streams[SURVEILLANCE]["acknowledged_offset"] is None


def test_records_have_the_consume_shape_and_content(web: Web) -> None:
    answer = web.client.get(RECORDS, headers=web.token("boa-hor-noord"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["from_offset"] == 0
    assert body["next_offset"] == 2
    expected = web.run(lambda b: [d.as_json() for d in
                                  b.consume("boa-hor-noord", SURVEILLANCE, 0, NOW)])
    assert body["records"] == expected
    assert set(body["records"][0]) == {"offset", "event_type", "purpose", "recipient",
                                       "record", "traceparent"}
    assert "victim" not in json.dumps(body)
    assert "111222333" not in json.dumps(body)


def test_from_offset_and_limit_page_through_a_stream(web: Web) -> None:
    headers = web.token("boa-hor-noord")
    first = web.client.get(RECORDS, params={"limit": 1}, headers=headers).json()
    assert [r["offset"] for r in first["records"]] == [0]
    assert first["next_offset"] == 1
    second = web.client.get(RECORDS, params={"from_offset": first["next_offset"], "limit": 1},
                            headers=headers).json()
    assert [r["offset"] for r in second["records"]] == [1]
    ranges = [{k: a["detail"][k] for k in ("from_offset", "count", "range",
                                           "processing_activity_id")}
              for a in accesses(web)]  # (the rest names who asked: test_access_audit.py)
    activity = {"processing_activity_id": SURVEILLANCE_ACTIVITY}  # issue 13: LDV activity
    assert ranges[-2:] == [{"from_offset": "0", "count": "1", "range": "0-0", **activity},
                           {"from_offset": "1", "count": "1", "range": "1-1", **activity}]


def test_an_offset_past_the_end_is_200_with_no_records(web: Web) -> None:
    answer = web.client.get(RECORDS, params={"from_offset": 99},
                            headers=web.token("boa-hor-noord"))
    assert answer.status_code == 200
    assert answer.json()["records"] == []
    assert answer.json()["next_offset"] == 99
    last = accesses(web)[-1]
    assert last["detail"] == {"from_offset": "99", "count": "0", "channel": "http",
                              "token_id": last["detail"]["token_id"], "origin": "testclient",
                              "processing_activity_id": SURVEILLANCE_ACTIVITY}


@pytest.mark.parametrize("params", [
    {"from_offset": "abc"}, {"from_offset": "-1"}, {"from_offset": "1.5"},
    {"from_offset": str(2**70)}, {"from_offset": ""}, {"limit": "0"}, {"limit": "100000"},
    {"wait": "-1"}, {"wait": "3600"}, {"from_offset": "0x10"},
])
def test_a_malformed_offset_or_parameter_is_422_and_not_an_access(web: Web,
                                                                  params: dict[str, str]
                                                                  ) -> None:
    headers = web.token("boa-hor-noord")
    before = len(accesses(web))
    answer = web.client.get(RECORDS, params=params, headers=headers)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail
    assert all(set(d) == {"loc", "msg", "type"} for d in detail)
    assert len(accesses(web)) == before


def test_a_malformed_purpose_name_is_422(web: Web) -> None:
    answer = web.client.get("/v1/streams/NOT%20A%20NAME/records",
                            headers=web.token("boa-hor-noord"))
    assert answer.status_code == 422


# -- another recipient's stream -----------------------------------------------------------------

@pytest.mark.parametrize(("method", "suffix", "body"), [("get", "records", None),
                                                       ("post", "ack", {"offset": 0})])
def test_another_recipients_stream_is_403_and_the_refusal_is_audited(
        web: Web, method: str, suffix: str, body: object) -> None:
    before = len(accesses(web))
    answer = web.client.request(method, f"/v1/streams/nazorg-detentie-terugkeer/{suffix}",
                                json=body, headers=web.token("boa-hor-noord"))
    assert answer.status_code == 403
    assert "Ali" not in answer.text
    entries = accesses(web)
    assert len(entries) == before + 1
    refused = entries[-1]
    assert refused["decision"] == "refused"
    assert refused["recipient"] == "boa-hor-noord"
    assert refused["purpose"] == "nazorg-detentie-terugkeer"
    assert refused["reason_code"] == "not_a_stream_of_recipient"
    assert refused["data_subjects"] == []


def test_an_unknown_purpose_is_403_audited_without_the_name(web: Web) -> None:
    answer = web.client.get("/v1/streams/no-such-purpose-123456789/records",
                            headers=web.token("preventie"))
    assert answer.status_code == 403
    refused = accesses(web)[-1]
    assert refused["reason_code"] == "unknown_purpose"
    assert refused["purpose"] is None
    assert "123456789" not in json.dumps(refused)


def test_a_recipient_never_sees_another_recipients_records(web: Web) -> None:
    west = web.client.get(RECORDS, headers=web.token("boa-hor-west")).json()
    assert [r["recipient"] for r in west["records"]] == ["boa-hor-west"]
    assert west["records"][0]["record"]["wijk"] == "west"


# -- the audit: every read exactly once ---------------------------------------------------------

def test_every_read_is_exactly_one_access_entry_with_its_range(web: Web) -> None:
    noord, preventie = web.token("boa-hor-noord"), web.token("preventie")
    before = len(accesses(web))
    reads = [(noord, RECORDS, {}), (noord, RECORDS, {"from_offset": 1}),
             (noord, f"/v1/streams/{BAN}/records", {}),
             (preventie, "/v1/streams/preventie-woninginbraak/records", {"limit": 2}),
             (noord, RECORDS, {"from_offset": 5})]
    returned = []
    for headers, path, params in reads:
        answer = web.client.get(path, params=params, headers=headers)
        assert answer.status_code == 200
        returned.append([r["offset"] for r in answer.json()["records"]])
    web.client.get("/v1/streams", headers=noord)  # listing is not a read of records
    new = accesses(web)[before:]
    assert len(new) == len(reads)
    for entry, offsets, (_, path, params) in zip(new, returned, reads, strict=True):
        assert entry["purpose"] == path.split("/")[3]
        assert entry["detail"]["count"] == str(len(offsets))
        assert entry["detail"]["from_offset"] == str(params.get("from_offset", 0))
        if offsets:
            assert entry["detail"]["range"] == f"{offsets[0]}-{offsets[-1]}"
        assert entry["decision"] is None
    assert returned == [[0, 1], [1], [0], [0, 1], []]


def test_a_read_names_the_data_subjects_it_returned(web: Web) -> None:
    web.client.get(f"/v1/streams/{BAN}/records", headers=web.token("boa-hor-oost"))
    entry = accesses(web)[-1]
    assert [s["role"] for s in entry["data_subjects"]] == ["person.bsn"]
    assert "777888999" not in json.dumps(entry)


# -- tombstones and long-poll -------------------------------------------------------------------

def test_expiry_tombstones_are_delivered_when_the_ban_ends(web: Web) -> None:
    headers = web.token("boa-hor-oost")
    path = f"/v1/streams/{BAN}/records"
    released = web.client.get(path, headers=headers).json()["records"]
    assert len(released) == 1
    web.clock.advance(days=90)  # past valid_until 2026-07-31
    later = web.client.get(path, params={"from_offset": 1}, headers=headers).json()
    assert len(later["records"]) == 1
    tombstone = later["records"][0]
    assert tombstone["tombstone"] is True
    assert tombstone["record"]["ref"] == released[0]["record"]["ref"]


def test_long_poll_returns_empty_when_nothing_comes(web: Web) -> None:
    started = time.monotonic()
    answer = web.client.get(RECORDS, params={"from_offset": 2, "wait": 1},
                            headers=web.token("boa-hor-noord"))
    assert answer.status_code == 200
    assert answer.json()["records"] == []
    assert time.monotonic() - started >= 0.9


def test_long_poll_answers_when_a_record_arrives_and_reads_once(web: Web) -> None:
    headers = web.token("boa-hor-noord")
    before = len(accesses(web))

    def publish() -> None:
        time.sleep(0.3)
        web.run(lambda b: b.ingest("politie", "politie.woninginbraak",
                                   f.lines(f.woninginbraak()), NOW))

    thread = threading.Thread(target=publish)
    thread.start()
    started = time.monotonic()
    answer = web.client.get(RECORDS, params={"from_offset": 2, "wait": 10}, headers=headers)
    thread.join()
    assert time.monotonic() - started < 5
    assert [r["offset"] for r in answer.json()["records"]] == [2]
    assert len(accesses(web)) == before + 1


def test_an_immediate_answer_when_records_are_there(web: Web) -> None:
    started = time.monotonic()
    answer = web.client.get(RECORDS, params={"wait": 10}, headers=web.token("boa-hor-noord"))
    assert len(answer.json()["records"]) == 2
    assert time.monotonic() - started < 2


# -- acknowledgements ---------------------------------------------------------------------------

def test_ack_is_stored_listed_and_audited(web: Web) -> None:
    headers = web.token("boa-hor-noord")
    path = f"/v1/streams/{SURVEILLANCE}/ack"
    first = web.client.post(path, json={"offset": 0}, headers=headers)
    assert first.status_code == 200
    assert first.json() == {"recipient": "boa-hor-noord", "purpose": SURVEILLANCE,
                            "acknowledged_offset": 0, "previous_offset": None}
    second = web.client.post(path, json={"offset": 1}, headers=headers).json()
    assert second["previous_offset"] == 0
    streams = web.client.get("/v1/streams", headers=headers).json()["streams"]
    assert {s["purpose"]: s["acknowledged_offset"] for s in streams} == {SURVEILLANCE: 1,
                                                                        BAN: None}
    acks = web.audit(name="ack")
    assert [(a["recipient"], a["purpose"], a["egress_offset"]) for a in acks] == [
        ("boa-hor-noord", SURVEILLANCE, 0), ("boa-hor-noord", SURVEILLANCE, 1)]


@pytest.mark.parametrize(("body", "status"), [
    ({"offset": 2}, 409), ({"offset": 10**6}, 409), ({"offset": -1}, 422),
    ({"offset": "zero"}, 422), ({}, 422), ({"offset": 0, "extra": 1}, 422),
    ({"offset": 2**60}, 422), ([0], 422),
])
def test_a_bad_ack_is_refused_and_not_stored(web: Web, body: object, status: int) -> None:
    headers = web.token("boa-hor-noord")
    answer = web.client.post(f"/v1/streams/{SURVEILLANCE}/ack", json=body, headers=headers)
    assert answer.status_code == status
    assert web.app.state.web_state.acked("boa-hor-noord") == {}
    assert web.audit(name="ack") == []


def test_ack_with_a_non_json_body_is_422(web: Web) -> None:
    answer = web.client.post(f"/v1/streams/{SURVEILLANCE}/ack", content=b"{not json",
                             headers={**web.token("boa-hor-noord"),
                                      "Content-Type": "application/json"})
    assert answer.status_code == 422


# -- the spec and the headers -------------------------------------------------------------------

def test_the_app_serves_its_openapi_spec(web: Web) -> None:
    spec = web.client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/v1/streams", "/v1/streams/{purpose}/records",
                                  "/v1/streams/{purpose}/ack", "/v1/schemas/{fingerprint}",
                                  "/v1/party/traces/{trace_id}/disclosures",
                                  "/v1/party/purposes/{purpose}/disclosures",
                                  "/v1/party/processing-activities/disclosures",
                                  "/v1/party/disclosures/by-subject"}
    assert spec["components"]["securitySchemes"]["recipientToken"]["scheme"] == "bearer"
    records = spec["paths"]["/v1/streams/{purpose}/records"]["get"]
    assert {p["name"] for p in records["parameters"]} == {"purpose", "from_offset", "limit",
                                                          "wait"}
    assert {"200", "401", "403", "422"} <= set(records["responses"])


def test_responses_are_not_cached_and_carry_security_headers(web: Web) -> None:
    answer = web.client.get(RECORDS, headers=web.token("boa-hor-noord"))
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


def test_the_api_works_for_a_purpose_given_to_several_recipients(web: Web) -> None:
    team = web.client.get(f"/v1/streams/{BAN}/records", headers=web.token("interventieteam"))
    assert team.status_code == 200
    assert len(team.json()["records"]) == 1


def test_request_log_lines_name_routes_not_paths(web: Web,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from broker import logs

    logs.configure("info", "json")
    try:
        web.client.get("/v1/streams/no-such-purpose-987654321/records",
                       headers=web.token("preventie"))
    finally:
        logs.unconfigure()
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line.get("event") == "http request"]
    assert requests
    assert requests[-1]["route"] == "/v1/streams/{purpose}/records"
    assert "987654321" not in err


def test_the_documented_spec_is_the_served_spec(web: Web) -> None:
    """docs/openapi.json is what the app serves; regenerate it with the command in docs/web.md."""
    documented = json.loads((REPO / "docs" / "openapi.json").read_text(encoding="utf-8"))
    assert documented == web.client.get("/openapi.json").json()


# -- schema discovery ---------------------------------------------------------------------------

def test_a_schema_is_served_by_its_fingerprint_as_schemas_list_prints_it(web: Web) -> None:
    view = SchemaRegistry(REPO / "schemas").get("views.surveillance_woninginbraak")
    answer = web.client.get(f"/v1/schemas/{view.fingerprint.hex().upper()}",
                            headers=web.token("boa-hor-noord"))
    assert answer.status_code == 200
    body = answer.json()
    assert body["name"] == "views.surveillance_woninginbraak"
    assert body["fingerprint"] == view.fingerprint.hex()
    assert body["schema"] == view.raw
    assert body["used"] == ["view of boa-hor-noord for surveillance-woninginbraak"]
    # the fingerprint is fastavro's CRC-64-AVRO of the canonical form served with it
    assert fastavro_fingerprint(body["canonical_form"], "CRC-64-AVRO") == body["fingerprint"]


def test_an_unknown_fingerprint_is_404(web: Web) -> None:
    answer = web.client.get("/v1/schemas/00000000000000ff", headers=web.token("preventie"))
    assert answer.status_code == 404
    assert "schemas list" in answer.json()["detail"]
    assert web.client.get("/v1/schemas/not-hex", headers=web.token("preventie")
                          ).status_code == 422
