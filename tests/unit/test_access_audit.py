"""Who, and from where, on every access (issue 13 item 5; NEN 7513, BIO 8.15.01): a
recipient read names the token's id (never the token), the end user the recipient system
passes (only as a keyed pseudonym per recipient) and the origin; each of the FG's own uses
of the log in the console is exactly one audit entry naming the account and the origin,
a failed login too, and no entry ever holds a password or a token."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.app.service import Broker
from broker.web import auth
from tests.unit.web_support import FG_NAME, FG_PASSWORD, VICTIM_BSN, Web, open_web

RECORDS = "/v1/streams/surveillance-woninginbraak/records"
REPO = Path(__file__).resolve().parents[2]
BOA = "BOA-4711"


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    yield from open_web(tmp_path / "data")


def raw_entries(web: Web) -> list[bytes]:
    return web.run(lambda b: [data for _, data in b.log.audit_rows()])


def decoded(web: Web) -> list[dict[str, Any]]:
    def run(b: Broker) -> list[dict[str, Any]]:
        schema = b.registry.get("records.audit_entry")
        return [schema.decode(data) for _, data in b.log.audit_rows()]
    return web.run(run)


def one_new_entry(web: Web, action: Callable[[], Any]) -> dict[str, Any]:
    """Run the action; exactly one audit entry is added, returned decoded."""
    before = len(raw_entries(web))
    action()
    after = decoded(web)
    assert len(after) == before + 1, [e["name"] for e in after[before:]]
    return after[-1]


def token(web: Web, recipient: str) -> tuple[str, str]:
    made = auth.create_token(web.app.state.web_state, recipient, "test", 0)
    return made.token, made.token_id


# -- the recipient API ------------------------------------------------------------------------

def test_a_read_names_the_token_id_the_end_user_pseudonym_and_the_origin(web: Web) -> None:
    secret, token_id = token(web, "boa-hor-noord")
    headers = {"Authorization": f"Bearer {secret}", "X-End-User": BOA}
    entry = one_new_entry(web, lambda: web.client.get(RECORDS, headers=headers))
    assert entry["name"] == "access"
    detail = entry["detail"]
    assert (detail["channel"], detail["token_id"], detail["origin"]) == \
        ("http", token_id, "testclient")
    assert len(detail["end_user"]) == 32
    assert BOA not in detail["end_user"]
    again = one_new_entry(web, lambda: web.client.get(RECORDS, headers=headers))
    assert again["detail"]["end_user"] == detail["end_user"]  # stable within a recipient
    everything = b"".join(raw_entries(web))
    assert secret.encode() not in everything
    assert BOA.encode() not in everything


def test_the_end_user_pseudonym_differs_per_recipient(web: Web) -> None:
    def end_user(recipient: str, purpose: str) -> str:
        secret, _ = token(web, recipient)
        entry = one_new_entry(web, lambda: web.client.get(
            f"/v1/streams/{purpose}/records",
            headers={"Authorization": f"Bearer {secret}", "X-End-User": BOA}))
        return str(entry["detail"]["end_user"])

    assert end_user("boa-hor-noord", "surveillance-woninginbraak") != \
        end_user("preventie", "preventie-woninginbraak")


def test_a_refused_stream_and_an_ack_name_who_asked(web: Web) -> None:
    secret, token_id = token(web, "boa-hor-noord")
    headers = {"Authorization": f"Bearer {secret}", "X-End-User": BOA}
    refused = one_new_entry(web, lambda: web.client.get(
        "/v1/streams/preventie-woninginbraak/records", headers=headers))
    assert refused["decision"] == "refused"
    assert refused["detail"]["token_id"] == token_id
    assert "end_user" in refused["detail"]
    web.client.get(RECORDS, headers=headers)
    ack = one_new_entry(web, lambda: web.client.post(
        "/v1/streams/surveillance-woninginbraak/ack", json={"offset": 0}, headers=headers))
    assert ack["name"] == "ack"
    assert ack["detail"]["token_id"] == token_id


@pytest.mark.parametrize("value", ["", " padded", "a" * 129, "tab\there", "nul\x00"])
def test_a_bad_end_user_header_is_refused_and_not_echoed(web: Web, value: str) -> None:
    secret, _ = token(web, "boa-hor-noord")
    before = len(raw_entries(web))
    answer = web.client.get(RECORDS, headers={"Authorization": f"Bearer {secret}",
                                              "X-End-User": value})
    assert answer.status_code == 400
    assert value not in answer.text or not value
    assert len(raw_entries(web)) == before  # nothing delivered, nothing to audit


# -- the FG console ---------------------------------------------------------------------------

def login(web: Web, password: str = FG_PASSWORD, name: str = FG_NAME) -> Any:
    return web.client.post("/console/login", data={"username": name, "password": password,
                                                   "csrf": web.csrf()})


def test_a_login_and_a_failed_one_are_one_entry_each_without_the_password(web: Web) -> None:
    web.add_fg_user()
    wrong = "not the password at all"
    failed = one_new_entry(web, lambda: login(web, wrong))
    assert (failed["name"], failed["detail"]["outcome"], failed["detail"]["by"]) == \
        ("login", "refused", FG_NAME)
    assert failed["detail"]["origin"] == "testclient"
    typo = one_new_entry(web, lambda: login(web, wrong, name="correct horse battery"))
    assert typo["detail"]["outcome"] == "refused"
    assert "by" not in typo["detail"]  # an unknown name may be a password in the wrong field
    done = one_new_entry(web, lambda: login(web))
    assert (done["detail"]["outcome"], done["detail"]["by"]) == ("ok", FG_NAME)
    everything = b"".join(raw_entries(web))
    for secret in (FG_PASSWORD, wrong, "correct horse battery"):
        assert secret.encode() not in everything


def test_a_throttled_login_is_one_entry(web: Web) -> None:
    web.add_fg_user()
    for _ in range(20):
        answer = login(web, "wrong wrong wrong")
        if answer.status_code == 429:
            break
    else:
        pytest.fail("never throttled")
    entry = one_new_entry(web, lambda: login(web))
    assert entry["detail"]["outcome"] == "throttled"


def test_each_fg_console_action_is_exactly_one_audit_entry(web: Web) -> None:
    csrf = web.login()
    proposal = (REPO / "policies" / "amstelveen.yaml").read_bytes()
    actions: list[tuple[str, Callable[[], Any]]] = [
        ("audit_search", lambda: web.client.get("/console/audit", params={
            "recipient": "boa-hor-noord", "page": "1"})),
        ("subject_report", lambda: web.client.post("/console/subject", data={
            "bsn": VICTIM_BSN, "csrf": csrf})),
        ("verify", lambda: web.client.post("/console/verificatie", data={"csrf": csrf})),
        ("impact", lambda: web.client.post("/console/impact", data={"csrf": csrf},
                                           files={"upload": ("v.yaml", proposal)})),
        ("impact", lambda: web.client.post("/console/impact", data={
            "choice": "policies/amstelveen.yaml", "csrf": csrf})),
        ("logout", lambda: web.client.post("/console/logout", data={"csrf": csrf})),
    ]
    for name, action in actions:
        entry = one_new_entry(web, action)
        assert entry["name"] == name
        assert (entry["detail"]["channel"], entry["detail"]["by"],
                entry["detail"]["origin"]) == ("console", FG_NAME, "testclient")
    searches = [e for e in decoded(web) if e["name"] == "audit_search"]
    assert searches[-1]["detail"]["filters"] == "recipient"  # which, never the values
    everything = b"".join(raw_entries(web))
    assert VICTIM_BSN.encode() not in everything
    assert FG_PASSWORD.encode() not in everything
