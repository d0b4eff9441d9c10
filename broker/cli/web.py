"""`covenant-broker web ...`: serve the recipient API and the FG console, manage their
credentials.

  web --listen 127.0.0.1:8080          serve (either backend); --now pins the clock
  web token create --recipient R       print a new API token once (only its hash is kept)
  web token list | revoke ID
  web party-token create --party P     a covenant party's read token (party read API), once
  web party-token list | revoke ID
  web fg-user create NAME              prompts twice, or --password-stdin
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from broker.audit.checkpoint import pinned_verifier_key, trusted_checkpoint_note
from broker.cli.verify_options import read_text
from broker.clock import from_millis, iso_instant, now_utc, parse_instant, to_millis
from broker.config import Settings
from broker.errors import InputError
from broker.policy.covenant import load_covenant
from broker.web.body_limit import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_UPLOAD_BYTES, MAX_BODY_LIMIT

if TYPE_CHECKING:
    import uvicorn

AddOptions = Callable[[argparse.ArgumentParser, bool], None]
EXIT_OK, EXIT_FINDINGS = 0, 1


def add_commands(command: Callable[[str, str], argparse.ArgumentParser],
                 options: AddOptions) -> None:
    web = command("web", "serve the HTTP delivery API and the FG console; manage their "
                  "credentials")
    web.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                     help="address to serve on (default 127.0.0.1:8080)")
    web.add_argument("--poll-seconds", type=float, default=0.5,
                     help="long-poll: how often to look for new records")
    web.add_argument("--proposals", type=Path, action="append", default=[], metavar="DIR",
                     help="a folder of proposed covenants for the policy-impact page "
                     "(repeatable; policies/ and <data-dir>/proposals are always listed)")
    web.add_argument("--secure-cookies", action="store_true",
                     help="send the console cookie over https only (behind TLS)")
    web.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                     help="a reverse proxy's address (or network, e.g. 10.0.0.0/24) whose "
                     "X-Forwarded-For is believed (repeatable; default: none, the TCP "
                     "peer is the client)")
    web.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                     metavar="N", help="largest request body on any route, refused with "
                     f"413 while being read (default {DEFAULT_MAX_BODY_BYTES}, at most "
                     f"{MAX_BODY_LIMIT})")
    web.add_argument("--max-upload-bytes", type=int, default=DEFAULT_MAX_UPLOAD_BYTES,
                     metavar="N", help="largest covenant upload on the policy-impact page "
                     f"(default {DEFAULT_MAX_UPLOAD_BYTES}, at most {MAX_BODY_LIMIT})")
    web.add_argument("--pinned-key", metavar="KEY|FILE",
                     help="the audit verifier key the FG pinned (from `audit public-key`, "
                     "kept outside the data dir): the Verificatie page checks against it, "
                     "not against the data dir's own key")
    web.add_argument("--origin", help="with a PEM --pinned-key: the log's origin")
    web.add_argument("--trusted-checkpoint", type=Path, action="append", default=[],
                     metavar="FILE", help="a signed checkpoint the FG kept (repeatable): "
                     "the log must still extend it, so a rollback or rewrite shows")
    sub = web.add_subparsers(dest="web_command", metavar="{token,party-token,fg-user}")

    def nested(parent: Any, name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = parent.add_parser(name, help=help_text,
                                                            description=help_text)
        options(parser, True)
        return parser

    tokens = nested(sub, "token", "recipient API tokens").add_subparsers(
        dest="token_command", required=True)
    create = nested(tokens, "create", "print a new API token for one recipient, once")
    create.add_argument("--recipient", required=True)
    create.add_argument("--label", default="", help="what the token is for (no personal data)")
    nested(tokens, "list", "the tokens by id, recipient and state (never the token)")
    revoke = nested(tokens, "revoke", "revoke a token by its id")
    revoke.add_argument("token_id")
    parties = nested(sub, "party-token", "covenant party read tokens (what was disclosed "
                     "from the party's events)").add_subparsers(dest="party_token_command",
                                                                 required=True)
    party_create = nested(parties, "create", "print a new read token for one source party, "
                          "once")
    party_create.add_argument("--party", required=True, help="a source of the covenant")
    party_create.add_argument("--label", default="",
                              help="what the token is for (no personal data)")
    nested(parties, "list", "the party tokens by id, party and state (never the token)")
    party_revoke = nested(parties, "revoke", "revoke a party token by its id")
    party_revoke.add_argument("token_id")
    users = nested(sub, "fg-user", "privacy-officer accounts of the console").add_subparsers(
        dest="fg_command", required=True)
    user = nested(users, "create", "create an FG account, or set its password")
    user.add_argument("name")
    user.add_argument("--password-stdin", action="store_true",
                      help="read the password from the first line of standard input")


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from broker.web.state import WebState  # noqa: PLC0415 - the web stack only when used

    if args.web_command == "token":
        return _tokens(args, settings, WebState(settings.data_dir))
    if args.web_command == "party-token":
        return _party_tokens(args, settings, WebState(settings.data_dir))
    if args.web_command == "fg-user":
        return _fg_user(args, WebState(settings.data_dir))
    return _serve(args, settings)


def _clock(args: argparse.Namespace) -> Callable[[], datetime]:
    if not args.now:
        return now_utc
    pinned = parse_instant(args.now)
    return lambda: pinned


def _tokens(args: argparse.Namespace, settings: Settings, state: Any) -> int:
    """`web token`: a recipient's read tokens."""
    from broker.web import auth  # noqa: PLC0415 - the web stack only when used

    return _token_command(args, state, args.token_command, "recipient", "token",
                          lambda: list(load_covenant(settings.policy_file()).recipients),
                          "the covenant lists",
                          auth.create_token, state.revoke_token, state.tokens)


def _party_tokens(args: argparse.Namespace, settings: Settings, state: Any) -> int:
    """`web party-token`: a covenant party's (a source's) tokens for the party read API."""
    from broker.web import auth  # noqa: PLC0415 - the web stack only when used

    return _token_command(args, state, args.party_token_command, "party", "party token",
                          lambda: list(load_covenant(settings.policy_file()).sources),
                          "the covenant's sources are",
                          auth.create_party_token, state.revoke_party_token,
                          state.party_tokens)


def _token_command(args: argparse.Namespace, state: Any, action: str, holder: str,
                   what: str, known: Callable[[], list[str]], known_as: str, create: Any,
                   revoke: Any, listed: Any) -> int:
    """create, revoke or list the tokens of one kind; `holder` is the attribute (and
    option) naming whom a token belongs to."""
    now_ms = to_millis(_clock(args)())
    if action == "create":
        owner, names = getattr(args, holder), known()  # the covenant, read for create only
        if owner not in names:
            kind = "recipient" if holder == "recipient" else "source party"
            raise InputError(f"unknown {kind} {owner!r}; {known_as} {', '.join(names)}")
        made = create(state, owner, args.label, now_ms)
        if args.json:
            print(json.dumps({"token": made.token, "token_id": made.token_id, holder: owner}))
        else:
            print(made.token)
            print(f"{what} id {made.token_id} for {owner}: shown once, only its hash is kept",
                  file=sys.stderr)
        return EXIT_OK
    if action == "revoke":
        if not revoke(args.token_id, now_ms):
            raise InputError(f"no active {what} with id {args.token_id!r}")
        print(f"{what} {args.token_id} revoked")
        return EXIT_OK
    rows = [{"token_id": t.token_id, holder: getattr(t, holder), "label": t.label,
             "created": iso_instant(from_millis(t.created_ms)),
             "revoked": iso_instant(from_millis(t.revoked_ms)) if t.revoked_ms else None}
            for t in listed()]
    for row in rows:
        print(json.dumps(row) if args.json else
              f"{row['token_id']}  {row[holder]:<20} {row['created']}  "
              f"{'revoked ' + row['revoked'] if row['revoked'] else 'active'}  {row['label']}")
    return EXIT_OK
    if action == "revoke":
        if not state.revoke_party_token(args.token_id, now_ms):
            raise InputError(f"no active party token with id {args.token_id!r}")
        print(f"party token {args.token_id} revoked")
        return EXIT_OK
    rows = [{"token_id": t.token_id, "party": t.party, "label": t.label,
             "created": iso_instant(from_millis(t.created_ms)),
             "revoked": iso_instant(from_millis(t.revoked_ms)) if t.revoked_ms else None}
            for t in state.party_tokens()]
    for row in rows:
        print(json.dumps(row) if args.json else
              f"{row['token_id']}  {row['party']:<20} {row['created']}  "
              f"{'revoked ' + row['revoked'] if row['revoked'] else 'active'}  {row['label']}")
    return EXIT_OK


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        raise InputError("the passwords differ")
    return first


def _fg_user(args: argparse.Namespace, state: Any) -> int:
    from broker.web import auth  # noqa: PLC0415 - the web stack only when used

    name = args.name.strip()
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        raise InputError("an account name is 1 to 100 characters without spaces")
    try:
        hashed = auth.hash_password(_read_password(args))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    created = state.set_fg_user(name, hashed, to_millis(now_utc()))
    print(f"FG account {name} {'created' if created else 'password changed'}")
    return EXIT_OK


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"--listen must be HOST:PORT, e.g. 127.0.0.1:8080, not {text!r}")
    return host, int(port)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn  # noqa: PLC0415 - the web stack only when used

    from broker.web.app import WebOptions, create_app  # noqa: PLC0415

    host, port = parse_listen(args.listen)
    options = WebOptions(clock=_clock(args), poll_seconds=args.poll_seconds,
                         secure_cookies=args.secure_cookies,
                         proposal_dirs=list(args.proposals),
                         max_body_bytes=args.max_body_bytes,
                         max_upload_bytes=args.max_upload_bytes,
                         trusted_proxies=tuple(args.trusted_proxy),
                         pinned_key=(pinned_verifier_key(args.pinned_key, args.origin,
                                                         "--pinned-key")
                                     if args.pinned_key else None),
                         trusted_checkpoints=tuple(
                             trusted_checkpoint_note(read_text(path, "trusted checkpoint"),
                                                     f"--trusted-checkpoint {path}")
                             for path in args.trusted_checkpoint))
    app = create_app(settings, options)
    print(f"covenant-broker web: http://{host}:{port}/console/ (FG console), "
          f"http://{host}:{port}/v1/ (recipient API), http://{host}:{port}/openapi.json",
          file=sys.stderr, flush=True)
    uvicorn.Server(server_config(app, host, port, options.trusted_proxies)).run()
    return EXIT_OK


def server_config(app: Any, host: str, port: int,
                  trusted_proxies: tuple[str, ...] = ()) -> uvicorn.Config:
    """The uvicorn configuration `web` serves with.

    Proxy headers are believed only from `trusted_proxies`. uvicorn's own default trusts
    X-Forwarded-For from 127.0.0.1, so any local caller (or a proxy on the same host that
    passes the header through) could name its own client address and walk past the login
    throttle's per-address lock; with no trusted proxy the header is not read at all.
    The addresses were checked by `WebOptions`.
    """
    import uvicorn  # noqa: PLC0415 - the web stack only when used

    # log_config=None: uvicorn logs through the broker's redacting chain; its access log is
    # off because app.py logs each request by route template instead of the concrete path.
    return uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                          server_header=False, proxy_headers=bool(trusted_proxies),
                          forwarded_allow_ips=list(trusted_proxies) or [])
