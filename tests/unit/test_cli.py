"""The CLI contract, run as a subprocess: names, output shapes and exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests import factories as f

NOW = "2026-05-10T12:00:00Z"
REPO = Path(__file__).resolve().parents[2]


def run(*args: str | Path, data: Path | None = None, stdin: bytes | None = None,
        now: str | None = NOW) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "broker.cli"]
    if data is not None:
        cmd += ["--data-dir", str(data)]
    if now is not None:
        cmd += ["--now", now]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    return subprocess.run([*cmd, *map(str, args)], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, check=False, cwd=REPO, env=env,
                          timeout=60)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return tmp_path / "data"


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_ingest_then_consume_prints_one_json_object_a_line(tmp_path: Path, data: Path) -> None:
    events = [f.woninginbraak(), f.woninginbraak(address={"wijk": "west"})]
    feed = write(tmp_path, "feed.jsonl", f.jsonl(*events) + b"not json\n")
    done = run("ingest", "--source", "politie", "--type", "politie.woninginbraak", feed,
               data=data)
    assert done.returncode == 0, done.stderr
    assert "2 accepted, 1 quarantined" in done.stdout
    assert "line 3: invalid_json" in done.stdout
    out = run("consume", "--recipient", "boa-hor-noord", data=data)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(lines) == 1
    assert set(lines[0]) == {"offset", "event_type", "purpose", "recipient", "record",
                             "traceparent"}
    assert lines[0]["offset"] == 0
    assert lines[0]["event_type"] == "politie.woninginbraak"
    assert lines[0]["purpose"] == "surveillance-woninginbraak"
    assert lines[0]["recipient"] == "boa-hor-noord"
    prevention = run("consume", "--recipient", "preventie", "--purpose",
                     "preventie-woninginbraak", data=data)
    offsets = [json.loads(line)["offset"] for line in prevention.stdout.splitlines()]
    assert offsets == [0, 1]
    later = run("consume", "--recipient", "preventie", "--purpose",
                "preventie-woninginbraak", "--from-offset", "1", data=data)
    assert [json.loads(line)["offset"] for line in later.stdout.splitlines()] == [1]


def test_a_consume_by_the_cli_names_who_ran_it_and_where(tmp_path: Path, data: Path) -> None:
    """NEN 7513: every access names who and from where; a CLI read named neither (its
    access entry had no channel, account or origin)."""
    import getpass
    import socket

    feed = write(tmp_path, "feed.jsonl", f.jsonl(f.woninginbraak()))
    assert run("ingest", "--source", "politie", "--type", "politie.woninginbraak", feed,
               data=data).returncode == 0
    assert run("consume", "--recipient", "boa-hor-noord", data=data).returncode == 0
    done = run("--json", "audit", "query", "--action", "access", data=data)
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(entries) == 1
    detail = entries[0]["detail"]
    assert detail["channel"] == "cli"
    assert detail["by"] == getpass.getuser()
    assert detail["origin"] == f"local:{socket.gethostname()}"


def test_ingest_json_output_and_stdin(data: Path) -> None:
    done = run("--json", "ingest", "--source", "om", "--type", "om.gebiedsverbod", "-",
               data=data, stdin=f.jsonl(f.gebiedsverbod(), {"event_id": "x"}))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["accepted"] == 1
    assert report["quarantined"] == 1
    assert report["quarantine"][0]["reason_code"] == "wrong_value"
    assert report["released"] == 3  # boa-hor-noord, boa-hor-oost, interventieteam


@pytest.mark.parametrize(("source", "event_type"), [
    ("brandweer", "politie.woninginbraak"), ("politie", "politie.fietsdiefstal")])
def test_ingest_refuses_unknown_source_or_type_and_stores_nothing(
        tmp_path: Path, data: Path, source: str, event_type: str) -> None:
    feed = write(tmp_path, "feed.jsonl", f.jsonl(f.woninginbraak()))
    done = run("ingest", "--source", source, "--type", event_type, feed, data=data)
    assert done.returncode == 2
    assert "unknown" in done.stderr
    if (data / "broker.db").exists():
        with sqlite3.connect(data / "broker.db") as db:
            assert db.execute("SELECT COUNT(*) FROM store").fetchone() == (0,)
            assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone() == (0,)


def test_ingest_of_an_unreadable_file_exits_non_zero(tmp_path: Path, data: Path) -> None:
    done = run("ingest", "--source", "politie", "--type", "politie.woninginbraak",
               tmp_path / "missing.jsonl", data=data)
    assert done.returncode == 2
    assert "missing.jsonl: cannot be read" in done.stderr


def test_a_naive_now_is_refused(data: Path) -> None:
    done = run("consume", "--recipient", "preventie", data=data, now="2026-05-10T12:00:00")
    assert done.returncode == 2
    assert "no zone or offset" in done.stderr


def test_consume_of_an_unknown_recipient_exits_non_zero(data: Path) -> None:
    done = run("consume", "--recipient", "boa-hor-centrum", data=data)
    assert done.returncode == 2
    assert "unknown recipient 'boa-hor-centrum'" in done.stderr


def test_theme_control_changes_what_the_interventieteam_gets(tmp_path: Path,
                                                              data: Path) -> None:
    feed = write(tmp_path, "feed.jsonl", f.jsonl(f.woninginbraak()))
    run("ingest", "--source", "politie", "--type", "politie.woninginbraak", feed, data=data)
    assert run("consume", "--recipient", "interventieteam", data=data).stdout == ""
    switched = run("control", "theme", "on", "woninginbraak", data=data,
                   now="2026-05-10T12:30:00Z")
    assert switched.returncode == 0, switched.stderr
    feed2 = write(tmp_path, "feed2.jsonl", f.jsonl(f.woninginbraak()))
    run("ingest", "--source", "politie", "--type", "politie.woninginbraak", feed2, data=data,
        now="2026-05-10T13:00:00Z")
    got = run("consume", "--recipient", "interventieteam", data=data).stdout.splitlines()
    assert len(got) == 1
    unknown = run("control", "theme", "on", "fietsdiefstal", data=data)
    assert unknown.returncode == 2


def test_policy_check_is_clean_for_the_shipped_covenant() -> None:
    done = run("policy", "check", now=None)
    assert done.returncode == 0, done.stdout + done.stderr


def test_policy_check_reports_file_key_problem_lines(tmp_path: Path) -> None:
    text = (REPO / "policies" / "amstelveen.yaml").read_text()
    text = text.replace("legal_basis: AVG art. 6 lid 1 sub a (toestemming van het slachtoffer)",
                        "legal_basis: ''")
    text = text.replace("postcode4: {from: address.postcode, transform: postcode4}\n"
                        "      wijk: {from: address.wijk}\n      attempt: keep",
                        "postcode4: {from: address.postcode, transform: blur}\n"
                        "      wijk: {from: address.wijk}\n      attempt: keep")
    bad = write(tmp_path, "bad.yaml", text.encode())
    done = run("policy", "check", bad, now=None)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert any(line.startswith(f"{bad}:purposes.slachtoffer-preventieadvies.legal_basis: ")
               for line in lines), lines
    assert any(line.startswith(f"{bad}:purposes.surveillance-woninginbraak.fields.postcode4"
                               ".transform: ") for line in lines), lines
    assert all(line.startswith(f"{bad}:") for line in lines)


def test_policy_check_of_a_folder_checks_every_covenant_file_in_it(tmp_path: Path) -> None:
    """Issue 11 item 8: `policy check policies` used to fail with "Is a directory"."""
    shipped = run("policy", "check", REPO / "policies", now=None)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    assert shipped.stdout == f"{REPO / 'policies' / 'amstelveen.yaml'}: ok\n"
    text = (REPO / "policies" / "amstelveen.yaml").read_text()
    folder = tmp_path / "policies"
    folder.mkdir()
    good = write(folder, "a-good.yaml", text.encode())
    bad = write(folder, "b-bad.yml", text.replace(
        "      - to: [casusregisseur-dt]", "      - to: [casusregisseur]").encode())
    worse = write(folder, "c-worse.yaml", b"covenant: [not, a, mapping]\n")
    write(folder, "notes.txt", b"not a covenant, not checked\n")
    done = run("policy", "check", folder, now=None)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert f"{good}: ok" in lines
    assert any(line.startswith(f"{bad}:purposes.nazorg-detentie-terugkeer.recipients.0.to.0: ")
               for line in lines), lines
    assert any(line.startswith(f"{worse}:") for line in lines), lines
    assert all(line.startswith((f"{good}:", f"{bad}:", f"{worse}:")) for line in lines)
    as_json = json.loads(run("--json", "policy", "check", folder, now=None).stdout)
    assert as_json["path"] == str(folder)
    assert sorted(as_json["files"]) == [str(good), str(bad), str(worse)]
    assert as_json["files"][str(good)] == []
    assert as_json["problems"] == [*as_json["files"][str(bad)], *as_json["files"][str(worse)]]


def test_policy_check_of_a_folder_without_covenant_files_could_not_run(tmp_path: Path) -> None:
    write(tmp_path, "readme.txt", b"no covenant here\n")
    done = run("policy", "check", tmp_path, now=None)
    assert done.returncode == 2
    assert done.stderr == (f"covenant-broker: error: {tmp_path}: no covenant file "
                           "(*.yaml, *.yml) in this folder\n")
    assert done.stdout == ""


def test_policy_check_reports_a_recipient_the_covenant_does_not_list(tmp_path: Path) -> None:
    text = (REPO / "policies" / "amstelveen.yaml").read_text()
    text = text.replace("      - to: [casusregisseur-dt]", "      - to: [casusregisseur]")
    bad = write(tmp_path, "bad.yaml", text.encode())
    done = run("policy", "check", bad, now=None)
    assert done.returncode == 1
    line = text.splitlines().index("      - to: [casusregisseur]") + 1
    assert (f"{bad}:purposes.nazorg-detentie-terugkeer.recipients.0.to.0: recipient "
            f"'casusregisseur' is not listed in recipients (line {line})") in done.stdout


def test_policy_check_reports_fields_not_in_the_schema(tmp_path: Path) -> None:
    text = (REPO / "policies" / "amstelveen.yaml").read_text()
    text = text.replace("      offence_category: keep\n", "      offence_category: keep\n"
                        "      shoe_size: keep\n")
    bad = write(tmp_path, "bad.yaml", text.encode())
    done = run("policy", "check", bad, now=None)
    assert done.returncode == 1
    assert (f"{bad}:purposes.nazorg-detentie-terugkeer.fields.shoe_size: shoe_size is not a "
            "field of om.detentie_uitstroom") in done.stdout


def test_audit_verify_passes_then_names_the_tampered_entry(tmp_path: Path,
                                                           data: Path) -> None:
    feed = write(tmp_path, "feed.jsonl", f.jsonl(f.woninginbraak(), f.gebiedsverbod()))
    run("ingest", "--source", "politie", "--type", "politie.woninginbraak", feed, data=data)
    ok = run("audit", "verify", data=data)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    with sqlite3.connect(data / "broker.db") as db:
        db.execute("DROP TRIGGER audit_no_update")  # an operator with database access
        entry = db.execute("SELECT entry FROM audit WHERE seq = 3").fetchone()[0]
        flipped = bytearray(entry)
        flipped[-3] ^= 0x01
        db.execute("UPDATE audit SET entry = ? WHERE seq = 3", (bytes(flipped),))
    bad = run("audit", "verify", data=data)
    assert bad.returncode != 0
    assert "entry 3" in bad.stdout or "entry 4" in bad.stdout


def test_demo_runs_end_to_end_and_its_audit_verifies(tmp_path: Path) -> None:
    done = run("--json", "demo", data=tmp_path / "demo", now=None)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["audit"]["ok"] is True
    assert summary["tombstones"] > 0
    # the day's correction and early lift of an area ban retract what they replace
    assert summary["retractions"]["correction"] > 0
    assert summary["retractions"]["withdrawal"] > 0
    assert sum(s["released"] for s in summary["streams"]) > 0
    assert {"invalid_json", "missing_field", "source_not_owner", "duplicate_event",
            "field_too_large", "naive_timestamp"} <= set(summary["quarantine_reasons"])
    again = run("--json", "demo", data=tmp_path / "demo", now=None)
    assert again.returncode == 2  # refuses to mix a second demo into a used directory


def test_key_files_are_created_owner_only(tmp_path: Path, data: Path) -> None:
    feed = write(tmp_path, "feed.jsonl", f.jsonl(f.boa_waarneming()))
    run("ingest", "--source", "gemeente", "--type", "gemeente.boa_waarneming", feed, data=data)
    keys = list((data / "keys").iterdir())
    assert keys
    assert all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    assert (data / "broker.db").stat().st_mode & 0o777 == 0o600


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path: Path) -> None:
    # `covenant-broker --json audit query | head -1`: the pipe breaks after the first line.
    # The command stops without a traceback (a logged "uncaught exception" before).
    assert run("demo", data=tmp_path / "demo", now=None).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVENANT_BROKER_")}
    proc = subprocess.Popen(  # output of ~340 KB: far more than a pipe buffer
        [sys.executable, "-m", "broker.cli", "--data-dir", str(tmp_path / "demo"), "--json",
         "audit", "query"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env)
    assert proc.stdout is not None
    assert proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert first.startswith(b"{")
    assert "Traceback" not in stderr
    assert "uncaught exception" not in stderr
