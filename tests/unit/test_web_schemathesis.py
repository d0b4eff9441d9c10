"""Property tests of the recipient API against its own OpenAPI spec (schemathesis).

Schemathesis generates requests from the spec (valid and invalid offsets, limits, waits,
purposes and ack bodies) and runs its checks on every response: never a 5xx, status codes
and bodies as the spec documents them, and unauthenticated requests refused. The server's
long-poll cap is tiny here so the run stays well under half a minute.

The schema is loaded from `api_spec()` (what /openapi.json serves; a test below holds them
equal) rather than through `schemathesis.pytest.from_fixture`, whose lazy loader does not
work with pytest 9; each case is sent in-process to the fixture's app.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from broker.web.app import api_spec
from tests.unit.web_support import Web, open_web

schema = schemathesis.openapi.from_dict(api_spec())
# Valid and invalid requests alike: malformed offsets, limits and bodies must be a 4xx.
schema.config.generation.update(modes=list(schemathesis.GenerationMode))


@pytest.fixture(scope="module")
def web_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    data = tmp_path_factory.mktemp("schemathesis") / "data"
    for web in open_web(data, max_wait_seconds=0.05):
        schema.app = web.app  # as from_asgi does: cases go to this app, in-process
        yield web


@pytest.fixture(scope="module")
def noord(web_api: Web) -> dict[str, str]:
    return web_api.token("boa-hor-noord")


def test_the_fuzzed_spec_is_the_served_spec(web_api: Web) -> None:
    assert web_api.client.get("/openapi.json").json() == api_spec()


@schema.parametrize()
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_the_api_keeps_its_spec_and_never_fails_with_a_5xx(
        case: schemathesis.Case, web_api: Web, noord: dict[str, str]) -> None:
    case.operation.app = case.operation.schema.app = web_api.app  # made at collection
    response = case.call_and_validate(headers=noord)
    assert response.status_code < 500
