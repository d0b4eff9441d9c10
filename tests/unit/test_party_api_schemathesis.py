"""Property tests of the party read API against its own OpenAPI spec, with a party token.

As test_web_schemathesis.py does for the recipient API (which it calls with a recipient
token, so the party routes there only ever answer 401): schemathesis generates valid and
invalid questions (trace ids, purposes, versions, URIs, pseudonym bodies, cursors, limits)
and checks every answer against the spec; never a 5xx.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from broker.web import auth
from broker.web.app import api_spec
from tests.unit.web_support import Web, open_web


def _without_security(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with the party routes' security left out: every case carries the
    fixture's party token, so a negative case "without the Authorization header" would be
    sent with it anyway and wrongly count as accepted. Tokens are tested in
    test_party_api.py; here the questions are fuzzed."""
    spec = copy.deepcopy(spec)
    for path, item in spec["paths"].items():
        if path.startswith("/v1/party/"):
            for operation in item.values():
                operation.pop("security", None)
    return spec


schema = schemathesis.openapi.from_dict(_without_security(api_spec())).include(
    path_regex="^/v1/party/")
schema.config.generation.update(modes=list(schemathesis.GenerationMode))


@pytest.fixture(scope="module")
def web_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    data = tmp_path_factory.mktemp("party-schemathesis") / "data"
    for web in open_web(data):
        schema.app = web.app
        yield web


@pytest.fixture(scope="module")
def police(web_api: Web) -> dict[str, str]:
    made = auth.create_party_token(web_api.app.state.web_state, "politie", "fuzz", 0)
    return {"Authorization": f"Bearer {made.token}"}


@schema.parametrize()
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_the_party_api_keeps_its_spec_and_never_fails_with_a_5xx(
        case: schemathesis.Case, web_api: Web, police: dict[str, str]) -> None:
    case.operation.app = case.operation.schema.app = web_api.app
    response = case.call_and_validate(headers=police)
    assert response.status_code < 500
