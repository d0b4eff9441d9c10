"""The covenant parties' read API (issue 13 item 4): own events only, each read one audit entry.

The app runs on a data directory seeded through the pipeline (web_support.seed): police
burglaries, an OM area ban and an OM returnee. What a party may see is derived here by a
full decode scan of the log, which the API itself never does; every answer must be exactly
the entries of that party's events that match, and never one of another party's.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker import cli, logs
from broker.web import auth, party_api
from broker.web.state import WebState
from tests.unit.web_support import Web, open_web

BY_SUBJECT = "/v1/party/disclosures/by-subject"
BY_ACTIVITY = "/v1/party/processing-activities/disclosures"
PARTIES = ["politie", "om", "gemeente"]
BURGLARY = "surveillance-woninginbraak"
BURGLARY_ACTIVITY = ("urn:nl:amstelveen-veiligheid:v1:verwerkingsactiviteit:"
                     "surveillance-woninginbraak")
BAN = "handhaving-gebiedsverbod"


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    yield from open_web(tmp_path_factory.mktemp("party") / "data")


@pytest.fixture(scope="module")
def tokens(web: Web) -> dict[str, dict[str, str]]:
    out = {}
    for party in PARTIES:
        made = auth.create_party_token(web.app.state.web_state, party, "test", 0)
        out[party] = {"Authorization": f"Bearer {made.token}"}
    return out


@pytest.fixture(scope="module")
def log(web: Web) -> list[dict[str, Any]]:
    """Every entry, by a full scan (not an index), with its seq."""
    def scan(broker: Any) -> list[dict[str, Any]]:
        from broker.model.render import to_json

        audit = broker.audit
        return [{**to_json(audit.schema.decode(data)), "seq": seq}
                for seq, data in audit.store.audit_entries(0)]
    entries: list[dict[str, Any]] = web.run(scan)
    return entries


def reads(web: Web) -> list[dict[str, Any]]:
    return web.audit(name="party_read")


def expected(log: list[dict[str, Any]], party: str, **where: Any) -> list[int]:
    out = []
    for entry in log:
        if entry.get("source") != party:
            continue
        if "pseudonym" in where:
            if not any(s["pseudonym"] == where["pseudonym"] for s in entry["data_subjects"]):
                continue
        elif any(entry.get(k) != v for k, v in where.items()):
            continue
        out.append(entry["seq"])
    return out


def seqs(answer: Any) -> list[int]:
    assert answer.status_code == 200, answer.text
    return [e["seq"] for e in answer.json()["entries"]]


def by_trace(trace: str) -> str:
    return f"/v1/party/traces/{trace}/disclosures"


def by_purpose(purpose: str) -> str:
    return f"/v1/party/purposes/{purpose}/disclosures"


def walk(web: Web, headers: dict[str, str], method: str, path: str, limit: int,
         **asked: Any) -> list[int]:
    """Every page of one question, following next_after."""
    found: list[int] = []
    after = None
    while True:
        if method == "get":
            params = {**asked, "limit": limit, **({"after": after} if after is not None else {})}
            answer = web.client.get(path, params=params, headers=headers)
        else:
            answer = web.client.post(path, json={**asked, "limit": limit, "after": after},
                                     headers=headers)
        found += seqs(answer)
        after = answer.json()["next_after"]
        if after is None:
            return found


# -- own events only ----------------------------------------------------------------------------

def test_a_party_sees_what_was_disclosed_from_its_own_events(
        web: Web, tokens: dict[str, dict[str, str]], log: list[dict[str, Any]]) -> None:
    answer = web.client.get(by_purpose(BURGLARY), headers=tokens["politie"])
    found = answer.json()["entries"]
    assert found
    assert [e["seq"] for e in found] == expected(log, "politie", purpose=BURGLARY)
    assert {e["decision"] for e in found} == {"release", "withhold"}
    assert all(e["event_type"] == "politie.woninginbraak" for e in found)
    ban = seqs(web.client.get(by_purpose(BAN), params={"covenant_version": 1},
                              headers=tokens["om"]))
    assert ban
    assert ban == expected(log, "om", purpose=BAN, covenant_version=1)
    assert seqs(web.client.get(by_purpose(BAN), params={"covenant_version": 2},
                               headers=tokens["om"])) == []
    # By processing activity URI: an unknown one matches nothing.
    assert seqs(web.client.get(BY_ACTIVITY, params={"processing_activity_id": "urn:x:y"},
                               headers=tokens["om"])) == []


def test_a_read_by_processing_activity_finds_the_purposes_entries_and_names_the_uri(
        web: Web, tokens: dict[str, dict[str, str]], log: list[dict[str, Any]]) -> None:
    """Before: every answer's processing_activity_id was null (it was read from the entry's
    top level; entries hold it in detail), and no test asked for a real URI."""
    answer = web.client.get(BY_ACTIVITY, params={"processing_activity_id": BURGLARY_ACTIVITY,
                                                 "limit": 500}, headers=tokens["politie"])
    found = answer.json()["entries"]
    assert found
    assert [e["seq"] for e in found] == expected(log, "politie", purpose=BURGLARY)
    assert {e["processing_activity_id"] for e in found} == {BURGLARY_ACTIVITY}
    by_purpose_answer = web.client.get(by_purpose(BURGLARY), params={"limit": 500},
                                       headers=tokens["politie"]).json()["entries"]
    assert {e["processing_activity_id"] for e in by_purpose_answer} == {BURGLARY_ACTIVITY}


def test_a_party_never_sees_another_partys_events(
        web: Web, tokens: dict[str, dict[str, str]], log: list[dict[str, Any]]) -> None:
    police = [e for e in log if e.get("source") == "politie" and e["data_subjects"]]
    trace, person = police[0]["trace_id"], police[0]["data_subjects"][0]["pseudonym"]
    for other in ("om", "gemeente"):
        headers = tokens[other]
        assert seqs(web.client.get(by_purpose(BURGLARY), headers=headers)) == []
        assert seqs(web.client.get(by_trace(trace), headers=headers)) == []
        assert seqs(web.client.post(BY_SUBJECT, json={"pseudonym": person},
                                    headers=headers)) == []
    assert seqs(web.client.get(by_trace(trace), headers=tokens["politie"])) == \
        expected(log, "politie", trace_id=trace)


@given(data=st.data())
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_question_from_any_party_gets_exactly_its_own_matching_entries(
        web: Web, tokens: dict[str, dict[str, str]], log: list[dict[str, Any]],
        data: st.DataObject) -> None:
    """Whatever a party asks (trace ids, purposes and pseudonyms of every party's events,
    and made-up ones), the answer is its own matching entries, complete, and only those."""
    traces = [*sorted({e["trace_id"] for e in log}), "0" * 32]
    purposes = [*sorted({e["purpose"] for e in log if e.get("purpose")}), "onbekend"]
    people = [*sorted({s["pseudonym"] for e in log for s in e["data_subjects"]}), "f" * 32]
    party = data.draw(st.sampled_from(PARTIES))
    kind = data.draw(st.sampled_from(["trace_id", "purpose", "pseudonym"]))
    limit = data.draw(st.integers(1, 5))
    headers = tokens[party]
    if kind == "trace_id":
        trace = data.draw(st.sampled_from(traces))
        got = walk(web, headers, "get", by_trace(trace), limit)
        want = expected(log, party, trace_id=trace)
    elif kind == "purpose":
        purpose = data.draw(st.sampled_from(purposes))
        got = walk(web, headers, "get", by_purpose(purpose), limit)
        want = expected(log, party, purpose=purpose)
    else:
        person = data.draw(st.sampled_from(people))
        got = walk(web, headers, "post", BY_SUBJECT, limit, pseudonym=person)
        want = expected(log, party, pseudonym=person)
    assert got == want


# -- each read is one audit entry ---------------------------------------------------------------

def test_each_read_is_exactly_one_audit_entry_naming_the_token_id(
        web: Web, log: list[dict[str, Any]]) -> None:
    made = auth.create_party_token(web.app.state.web_state, "politie", "audit test", 0)
    headers = {"Authorization": f"Bearer {made.token}"}
    person = next(s["pseudonym"] for e in log if e.get("source") == "politie"
                  for s in e["data_subjects"])
    trace = next(e["trace_id"] for e in log if e.get("source") == "politie")
    asks = [("get", by_trace(trace), {}, {"trace_id": trace}),
            ("get", by_purpose(BURGLARY), {"params": {"limit": 2}}, {"purpose": BURGLARY}),
            ("get", BY_ACTIVITY, {"params": {"processing_activity_id": "urn:x"}},
             {"processing_activity_id": "urn:x"}),
            ("post", BY_SUBJECT, {"json": {"pseudonym": person}}, {})]
    for method, path, request, detail in asks:
        before = reads(web)
        answer = web.client.request(method, path, headers=headers, **request)
        assert answer.status_code == 200, answer.text
        after = reads(web)
        assert len(after) == len(before) + 1
        entry = after[-1]
        assert entry["detail"]["party"] == "politie"
        assert entry["detail"]["token_id"] == made.token_id
        assert entry["detail"]["returned"] == str(len(answer.json()["entries"]))
        assert detail.items() <= entry["detail"].items()
        assert made.token not in json.dumps(entry)
        assert entry["source"] is None  # a read is no event of the party's own
        # who and from where (NEN 7513), and the request's own span: the one the answer's
        # traceparent names (before: no origin, and a trace of its own)
        assert entry["detail"]["origin"] == "testclient"
        assert entry["detail"]["channel"] == "http"
        _, trace_id, span_id, _ = answer.headers["traceparent"].split("-")
        assert (entry["trace_id"], entry["span_id"]) == (trace_id, span_id)
    lookup = reads(web)[-1]
    assert lookup["data_subjects"] == [{"pseudonym": person, "id_type": "pseudonym",
                                        "role": "lookup"}]
    assert person not in json.dumps(lookup["detail"])


def test_a_read_in_the_callers_trace_records_the_caller_as_the_foreign_operation(
        web: Web, tokens: dict[str, dict[str, str]]) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    answer = web.client.get(by_purpose(BURGLARY), headers={
        **tokens["politie"], "traceparent": f"00-{caller_trace}-{caller_span}-01"})
    assert answer.status_code == 200, answer.text
    entry = reads(web)[-1]
    assert entry["trace_id"] == caller_trace
    assert entry["parent_span_id"] == caller_span
    assert entry["foreign_span_id"] == caller_span
    assert entry["detail"]["foreign_entity"] == "urn:covenant-broker:party:politie"


@pytest.mark.parametrize("header", [None, "Bearer cbp_not-a-real-token", "Bearer ",
                                    "Basic Zm9vOmJhcg==", "Bearer " + "x" * 5000, "recipient"])
@pytest.mark.parametrize(("method", "path", "request_args"), [
    ("get", by_purpose(BURGLARY), {}),
    ("get", by_trace("a" * 32), {}),
    ("get", BY_ACTIVITY, {"params": {"processing_activity_id": "urn:x"}}),
    ("post", BY_SUBJECT, {"json": {"pseudonym": "a" * 32}})])
def test_a_bad_or_missing_credential_is_401_and_reads_nothing(
        web: Web, header: str | None, method: str, path: str,
        request_args: dict[str, Any]) -> None:
    """As on the recipient API, a failed token is not an audit entry: nothing was read. A
    recipient's API token is no party token."""
    if header == "recipient":
        header = web.token("boa-hor-noord")["Authorization"]
    before = len(reads(web)), len(web.audit(name="access"))
    headers = {"Authorization": header} if header is not None else {}
    answer = web.client.request(method, path, headers=headers, **request_args)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert "entries" not in answer.json()
    assert (len(reads(web)), len(web.audit(name="access"))) == before


def test_a_revoked_party_token_is_401(web: Web) -> None:
    state: WebState = web.app.state.web_state
    made = auth.create_party_token(state, "om", "revoke me", 0)
    headers = {"Authorization": f"Bearer {made.token}"}
    assert web.client.get(by_purpose(BAN), headers=headers).status_code == 200
    assert state.revoke_party_token(made.token_id, 1)
    assert web.client.get(by_purpose(BAN), headers=headers).status_code == 401


@pytest.mark.parametrize("params", [{"limt": 5}, {"purpose": BURGLARY}, {"trace_id": "a"}])
def test_an_unknown_query_parameter_is_422_and_not_a_read(
        web: Web, tokens: dict[str, dict[str, str]], params: dict[str, Any]) -> None:
    """A misspelt parameter must not silently ask a different question."""
    before = len(reads(web))
    answer = web.client.get(by_purpose(BAN), params=params, headers=tokens["om"])
    assert answer.status_code == 422
    assert len(reads(web)) == before


# -- bounded answers ----------------------------------------------------------------------------

def test_pages_are_bounded_and_follow_on(web: Web, tokens: dict[str, dict[str, str]],
                                         log: list[dict[str, Any]]) -> None:
    want = expected(log, "politie", purpose=BURGLARY)
    assert len(want) > 2
    first = web.client.get(by_purpose(BURGLARY), params={"limit": 2},
                           headers=tokens["politie"]).json()
    assert [e["seq"] for e in first["entries"]] == want[:2]
    assert first["next_after"] == want[1]
    assert walk(web, tokens["politie"], "get", by_purpose(BURGLARY), 2) == want
    too_many = web.client.get(by_purpose(BURGLARY), params={"limit": party_api.MAX_LIMIT + 1},
                              headers=tokens["politie"])
    assert too_many.status_code == 422


def test_the_work_per_request_is_bounded_too(web: Web, tokens: dict[str, dict[str, str]],
                                             log: list[dict[str, Any]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A rare trace id in a long log: each request examines at most MAX_SCAN entries and
    says where to go on, so nothing is lost and no request scans the whole log."""
    last = [e for e in log if e.get("source") == "politie"][-1]
    monkeypatch.setattr(party_api, "MAX_SCAN", 2)
    first = web.client.get(by_trace(last["trace_id"]), headers=tokens["politie"]).json()
    assert first["next_after"] is not None
    assert walk(web, tokens["politie"], "get", by_trace(last["trace_id"]), 10) == \
        expected(log, "politie", trace_id=last["trace_id"])


# -- the spec and the CLI -----------------------------------------------------------------------

def test_the_party_routes_are_in_the_openapi_spec(web: Web) -> None:
    spec = web.client.get("/openapi.json").json()
    paths = {by_trace("{trace_id}"), by_purpose("{purpose}"), BY_ACTIVITY, BY_SUBJECT}
    assert {p for p in spec["paths"] if p.startswith("/v1/party/")} == paths
    assert spec["components"]["securitySchemes"]["partyToken"]["scheme"] == "bearer"
    get = spec["paths"][by_purpose("{purpose}")]["get"]
    assert {p["name"] for p in get["parameters"]} == {"purpose", "covenant_version", "after",
                                                      "limit"}
    assert {"200", "401", "422"} <= set(get["responses"])
    for path in paths:
        assert all(s == {"partyToken": []} for method in spec["paths"][path].values()
                   for s in method["security"])
    post = spec["paths"][BY_SUBJECT]["post"]
    assert "parameters" not in post  # the pseudonym is in the body, never the URL


def test_party_token_cli_creates_lists_and_revokes(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def run(*args: str) -> int:
        return cli.main(["--data-dir", str(tmp_path), "--now", "2026-05-10T12:00:00Z", *args])

    try:
        assert run("--json", "web", "party-token", "create", "--party", "politie") == 0
        made = json.loads(capsys.readouterr().out)
        assert made["token"].startswith(auth.PARTY_TOKEN_PREFIX)
        state = WebState(tmp_path)
        assert state.token_party(auth.hash_token(made["token"])) == ("politie",
                                                                     made["token_id"])
        assert made["token"].encode() not in (tmp_path / "web.db").read_bytes()
        assert state.token_recipient(auth.hash_token(made["token"])) is None
        assert run("web", "party-token", "list") == 0
        listed = capsys.readouterr().out
        assert made["token_id"] in listed
        assert made["token"] not in listed
        assert run("web", "party-token", "create", "--party", "preventie") == 2  # no source
        assert run("web", "party-token", "revoke", made["token_id"]) == 0
        assert state.token_party(auth.hash_token(made["token"])) is None
        assert run("web", "party-token", "revoke", made["token_id"]) == 2
    finally:
        logs.unconfigure()
