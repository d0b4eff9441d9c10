"""Hostile requests stay bounded (issue 15, items 4 and 5): the request-body limit, enforced
while reading and before any route, and the client address the login throttle counts.

Most cases run in-process (Starlette's TestClient); the ones whose point is the network
path (a body streamed in chunks, a forged X-Forwarded-For) run against a real uvicorn on
127.0.0.1, configured by `server_config` as `covenant-broker web` is, and spoken to with
http.client.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import pytest
import uvicorn
from fastapi import FastAPI, Form

from broker import cli, logs
from broker.cli.web import server_config
from broker.errors import InputError
from broker.web.app import WebOptions
from broker.web.body_limit import MAX_BODY_LIMIT
from tests.unit.web_support import FG_NAME, FG_PASSWORD, Web, open_web

LIMIT = 16 * 1024
UPLOAD_LIMIT = 48 * 1024


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    for made in open_web(tmp_path / "data", max_body_bytes=LIMIT,
                         max_upload_bytes=UPLOAD_LIMIT):
        made.app.state.probe_calls = _add_probe(made.app)
        yield made


def _add_probe(app: FastAPI) -> list[int]:
    """An unauthenticated form route that records each call: did the handler run?"""
    calls: list[int] = []

    @app.post("/probe")
    async def probe(text: Annotated[str, Form()]) -> dict[str, int]:
        calls.append(len(text))
        return {"length": len(text)}

    return calls


def _chunks(total: int, size: int = 4096) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


# -- the body limit, in-process -----------------------------------------------------------------

def test_a_declared_length_over_the_limit_is_refused_before_any_route(web: Web) -> None:
    body = "text=" + "x" * LIMIT
    refused = web.client.post("/probe", content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 413
    assert str(LIMIT) in refused.json()["detail"]
    assert web.app.state.probe_calls == []
    login = web.client.post("/console/login", content="username=fg&password=" + "x" * LIMIT,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 413
    assert web.app.state.login_throttle._failures == {}  # the login handler never ran


def test_a_chunked_body_over_the_limit_is_cut_off_while_read(web: Web) -> None:
    refused = web.client.post("/probe", content=iter([b"text=", *_chunks(LIMIT + 1)]),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert refused.status_code == 413
    assert web.app.state.probe_calls == []


def test_the_recipient_api_refuses_a_large_body_for_a_valid_token_too(web: Web) -> None:
    token = web.token("boa-hor-noord")
    url = "/v1/streams/handhaving/ack"
    declared = web.client.post(url, content=b'{"offset": 0}' + b" " * LIMIT,
                               headers={**token, "Content-Type": "application/json"})
    assert declared.status_code == 413
    chunked = web.client.post(url, content=iter([b'{"offset": 0}', *_chunks(LIMIT)]),
                              headers={**token, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    assert web.audit(name="ack") == []
    no_token = web.client.post(url, content=b" " * (LIMIT + 1))
    assert no_token.status_code == 413  # bounded before authentication, not after


def test_a_body_under_the_limit_reaches_its_route(web: Web) -> None:
    answered = web.client.post("/probe", data={"text": "x" * (LIMIT - 100)})
    assert answered.status_code == 200
    chunked = web.client.post("/probe", content=iter([b"text=", *_chunks(LIMIT - 100)]),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert chunked.status_code == 200
    assert web.app.state.probe_calls == [LIMIT - 100, LIMIT - 100]
    login = web.client.post("/console/login", data={
        "username": "nobody", "password": "wrong password", "csrf": web.csrf()})
    assert login.status_code == 401


def test_the_impact_upload_has_its_own_bounded_limit(web: Web) -> None:
    csrf = web.login()
    between = web.client.post("/console/impact", data={"csrf": csrf}, files={
        "upload": ("c.yaml", b"#" * (LIMIT + 1024), "application/x-yaml")})
    assert between.status_code != 413  # above the general limit, within the upload's
    over = web.client.post("/console/impact", data={"csrf": csrf}, files={
        "upload": ("c.yaml", b"#" * UPLOAD_LIMIT, "application/x-yaml")})
    assert over.status_code == 413


def test_a_content_length_that_is_not_a_number_is_refused(web: Web) -> None:
    bad = web.client.post("/probe", content=b"text=a", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "1e9"})
    assert bad.status_code == 400
    huge = web.client.post("/probe", content=b"text=a", headers={
        "Content-Type": "application/x-www-form-urlencoded", "Content-Length": "9" * 5000})
    assert huge.status_code == 413
    assert web.app.state.probe_calls == []


@pytest.mark.parametrize("setting", ["max_body_bytes", "max_upload_bytes"])
@pytest.mark.parametrize("value", [0, -1, MAX_BODY_LIMIT + 1])
def test_the_limits_are_bounded_settings(setting: str, value: int) -> None:
    makers: dict[str, Callable[[], WebOptions]] = {
        "max_body_bytes": lambda: WebOptions(max_body_bytes=value),
        "max_upload_bytes": lambda: WebOptions(max_upload_bytes=value)}
    with pytest.raises(InputError, match=setting):
        makers[setting]()


def test_web_refuses_a_bad_limit_or_proxy_on_the_command_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        base = ["--data-dir", str(tmp_path), "web", "--listen", "127.0.0.1:0"]
        assert cli.main([*base, "--max-body-bytes", str(MAX_BODY_LIMIT + 1)]) == 2
        assert "max_body_bytes must be between 1 and" in capsys.readouterr().err
        assert cli.main([*base, "--trusted-proxy", "proxy.example"]) == 2
        assert "not 'proxy.example'" in capsys.readouterr().err
        assert cli.main([*base, "--pinned-key", "garbage"]) == 2  # could not run, no traceback
        assert "--pinned-key" in capsys.readouterr().err
    finally:
        logs.unconfigure()


# -- a real uvicorn, as `web` configures it -----------------------------------------------------

@contextmanager
def serve(app: FastAPI, trusted_proxies: tuple[str, ...] = ()) -> Iterator[int]:
    """Run `app` under uvicorn with `web`'s own configuration on a free 127.0.0.1 port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, trusted_proxies))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _stream(port: int, path: str, headers: dict[str, str], parts: Iterator[bytes],
            chunked: bool) -> tuple[int, bytes]:
    """Send the head, then `parts` (as chunks or raw), and read the answer; the server may
    answer and close before the body is complete."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("POST", path)
        for name, value in headers.items():
            conn.putheader(name, value)
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for part in parts:
                conn.send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            if chunked:
                conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # it answered already; read what it said
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_real_server_refuses_a_declared_50_mb_body_without_reading_it(web: Web) -> None:
    with serve(web.app) as port:
        status, body = _stream(port, "/console/login", {
            "Content-Type": "application/x-www-form-urlencoded",
            "Content-Length": str(50 * 1024 * 1024)}, iter([b"username=fg&password="]),
            chunked=False)
    assert status == 413
    assert b"larger than this route accepts" in body
    assert web.app.state.login_throttle._failures == {}


@pytest.mark.parametrize("path", ["/probe", "/v1/streams/handhaving/ack"])
def test_real_server_cuts_off_a_chunked_body_past_the_limit(web: Web, path: str) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded", **web.token("boa-hor-noord")}
    with serve(web.app) as port:
        status, _ = _stream(port, path, headers, iter([b"text=", *_chunks(LIMIT + 8192)]),
                            chunked=True)
        assert status == 413
        ok, body = _stream(port, "/probe", headers, iter([b"text=", *_chunks(1000)]),
                           chunked=True)
    assert (ok, body) == (200, b'{"length":1000}')
    assert web.app.state.probe_calls == [1000]
    assert web.audit(name="ack") == []


# -- the client address the login throttle counts ----------------------------------------------

def _fail_logins(port: int, forged: list[str]) -> list[int]:
    """One wrong login per forged X-Forwarded-For, each for another unknown name."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/console/login")
        page = conn.getresponse()
        cookie = (page.getheader("Set-Cookie") or "").split(";")[0]
        found = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
        assert cookie
        assert found
        statuses = []
        for n, address in enumerate(forged):
            form = urllib.parse.urlencode({"username": f"guess{n}", "password": "wrong one!",
                                           "csrf": found.group(1)})
            conn.request("POST", "/console/login", body=form, headers={
                "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie,
                "X-Forwarded-For": address})
            answer = conn.getresponse()
            answer.read()
            statuses.append(answer.status)
        return statuses
    finally:
        conn.close()


def _hosts(web: Web) -> set[str]:
    failures: dict[str, Any] = web.app.state.login_throttle._failures
    return {key for key in failures if key.startswith("host:")}


def test_a_forged_x_forwarded_for_does_not_change_the_address_the_throttle_counts(
        web: Web) -> None:
    """uvicorn's default believes X-Forwarded-For from 127.0.0.1: each forged address was a
    fresh throttle key, so the address lock never came. Now the TCP peer is the client."""
    forged = [f"203.0.113.{n}" for n in range(6)]
    with serve(web.app) as port:
        statuses = _fail_logins(port, forged)
    assert _hosts(web) == {"host:127.0.0.1"}
    assert statuses == [401] * 5 + [429]  # the sixth name, from the same peer: locked


def test_a_trusted_proxy_names_the_client(web: Web) -> None:
    with serve(web.app, trusted_proxies=("127.0.0.1",)) as port:
        assert _fail_logins(port, ["203.0.113.7"]) == [401]
    assert _hosts(web) == {"host:203.0.113.7"}


def test_the_fg_can_still_log_in_over_the_real_server(web: Web) -> None:
    web.add_fg_user()
    with serve(web.app) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/console/login")
        page = conn.getresponse()
        cookie = (page.getheader("Set-Cookie") or "").split(";")[0]
        found = re.search(r'name="csrf" value="([^"]+)"', page.read().decode())
        assert found
        conn.request("POST", "/console/login", body=urllib.parse.urlencode({
            "username": FG_NAME, "password": FG_PASSWORD, "csrf": found.group(1)}),
            headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        done = conn.getresponse()
        done.read()
        conn.close()
    assert (done.status, done.getheader("Location")) == (303, "/console/")
