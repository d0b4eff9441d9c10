"""`covenant-broker demo`: a realistic synthetic day for the four sources, end to end.

Everything derives from a fixed seed and a pinned clock, so two runs print the same
figures. The day: the police register burglaries in the morning and afternoon, the mayor
switches the intervention team's burglary theme on at 09:00, the OM sends area bans and
detention returns, boa's share observations, a few feeds send bad lines, at noon the
police correct a wrong address of a morning burglary and in the afternoon the OM lifts an
area ban early (a correction and a withdrawal, AVG art. 19: the recipients of the old
records get a retraction), and the next morning one area ban has ended, so its recipients
get an expiry tombstone.
"""

from __future__ import annotations

import json
import random
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from broker.app.service import Broker, IngestReport
from broker.clock import iso_instant
from broker.config import Settings
from broker.errors import ConfigError

DAY = datetime(2026, 5, 12, tzinfo=UTC)
WIJKEN = {
    "noord": (["Van der Hooplaan", "Keizer Karelweg", "Oranjebaan"], "1181"),
    "oost": (["Ouderkerkerlaan", "Amsterdamseweg", "Rembrandtweg"], "1183"),
    "zuid": (["Bankrasweg", "Westwijkplein", "Poortwachter"], "1187"),
    "west": (["Sportlaan", "Startbaan", "Meander"], "1186"),
}
FIRST = ["Jan", "Fatima", "Pieter", "Sanne", "Mohammed", "Anouk", "Kees", "Yara", "Daan",
         "Lotte", "Emre", "Noor"]
LAST = ["de Vries", "Jansen", "El Amrani", "Bakker", "Visser", "Yilmaz", "Smit", "Mulder",
        "de Boer", "Bos"]
MUNICIPALITIES = ["Amstelveen", "Amstelveen", "Aalsmeer", "Uithoorn", "Diemen",
                  "Ouder-Amstel", "Haarlem"]


def _bsn(rng: random.Random) -> str:
    """A number that passes the BSN eleven-test (synthetic, belongs to nobody in this demo)."""
    while True:
        digits = [rng.randint(0, 9) for _ in range(8)]
        total = sum(d * w for d, w in zip(digits, range(9, 1, -1), strict=True))
        last = total % 11
        if last < 10 and digits[0] != 0:
            return "".join(map(str, digits)) + str(last)


@dataclass
class DaySynth:
    rng: random.Random
    lines: dict[str, list[str]] = field(default_factory=dict)

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def name(self) -> str:
        return f"{self.rng.choice(FIRST)} {self.rng.choice(LAST)}"

    def address(self) -> dict[str, str]:
        wijk = self.rng.choice(list(WIJKEN))
        streets, pc = WIJKEN[wijk]
        letters = "".join(self.rng.choice("ABCDEGHJKLMNPRSTVWXZ") for _ in range(2))
        return {"street": self.rng.choice(streets), "house_number": str(self.rng.randint(1, 180)),
                "postcode": f"{pc} {letters}", "city": "Amstelveen", "wijk": wijk}

    def woninginbraak(self, reported: datetime) -> dict[str, Any]:
        until = reported - timedelta(hours=self.rng.randint(1, 30),
                                     days=self.rng.choice([0, 0, 0, 1, 3, 16]))
        victim_bsn = _bsn(self.rng) if self.rng.random() < 0.6 else None
        name = self.name()
        return {
            "event_id": self.uid(), "reported_at": iso_instant(reported),
            "occurred_from": iso_instant(until - timedelta(hours=self.rng.randint(1, 9))),
            "occurred_until": iso_instant(until), "address": self.address(),
            "attempt": self.rng.random() < 0.3, "heterdaad": self.rng.random() < 0.1,
            "modus_operandi": self.rng.choice(["cilinder_trekken", "flipperen",
                                               "raam_forceren", "inklimmen", "overig",
                                               "onbekend"]),
            "victim": {"name": name, "bsn": victim_bsn,
                       "phone": f"06{self.rng.randint(10_000_000, 99_999_999)}",
                       "email": f"{name.split()[0].lower()}@example.nl",
                       "consent_prevention_advice": self.rng.random() < 0.5},
            "suspect": ({"description": "man, donkere jas, fiets", "name": None, "bsn": None}
                        if self.rng.random() < 0.3 else None),
            "stolen_goods": self.rng.sample(["laptop", "sieraden", "contant geld", "telefoon",
                                             "fiets"], k=self.rng.randint(0, 3)),
            "police_case_number": f"PL1300-2026-{self.rng.randint(10000, 99999)}",
        }

    def gebiedsverbod(self, valid_from: date, valid_until: date) -> dict[str, Any]:
        wijken = self.rng.sample(list(WIJKEN), k=self.rng.randint(1, 2))
        return {
            "event_id": self.uid(), "decided_at": iso_instant(DAY - timedelta(days=2)),
            "valid_from": valid_from.isoformat(), "valid_until": valid_until.isoformat(),
            "person": {"name": self.name(), "date_of_birth": f"19{self.rng.randint(70, 99)}-0"
                       f"{self.rng.randint(1, 9)}-1{self.rng.randint(0, 9)}",
                       "bsn": _bsn(self.rng), "description": "slank postuur, rode pet"},
            "area": {"wijken": wijken,
                     "streets": [self.rng.choice(WIJKEN[w][0]) for w in wijken]},
            "legal_ground": "art. 38v Sr (vrijheidsbeperkende maatregel)",
            "parketnummer": f"13/{self.rng.randint(100000, 999999)}-26",
            "offence_category": "woninginbraak",
        }

    def detentie(self) -> dict[str, Any]:
        return {
            "event_id": self.uid(), "notified_at": iso_instant(DAY + timedelta(hours=10)),
            "expected_release_date": (DAY.date() + timedelta(days=self.rng.randint(14, 90))
                                      ).isoformat(),
            "facility": self.rng.choice(["PI Zaanstad", "PI Haarlem", "JC Zaanstad"]),
            "person": {"name": self.name(), "date_of_birth": f"19{self.rng.randint(70, 99)}-1"
                       f"{self.rng.randint(0, 2)}-0{self.rng.randint(1, 9)}",
                       "bsn": _bsn(self.rng)},
            "municipality": self.rng.choice(MUNICIPALITIES),
            "needs": {k: self.rng.random() < 0.5 for k in ("id_document", "housing", "income",
                                                            "debts", "care")},
            "offence_category": self.rng.choice(["woninginbraak", "diefstal", "geweld"]),
            "risk_notes": "vertrouwelijk: zie reclasseringsadvies",
            "parketnummer": f"13/{self.rng.randint(100000, 999999)}-25",
        }

    def waarneming(self, at: datetime) -> dict[str, Any]:
        addr = self.address()
        return {
            "event_id": self.uid(), "observed_at": iso_instant(at),
            "boa_id": f"BOA-{self.rng.randint(100, 140)}", "wijk": addr["wijk"],
            "location": {"street": addr["street"], "postcode": addr["postcode"]},
            "category": self.rng.choice(["verdachte_situatie", "overlast", "inbraaksporen",
                                         "overig"]),
            "description": "persoon kijkt bij ramen naar binnen",
            "vehicle_plate": "XX-123-Y" if self.rng.random() < 0.3 else None,
            "person_description": "jongen, grijze hoodie" if self.rng.random() < 0.5 else None,
        }


@dataclass
class Step:
    at: datetime
    source: str
    event_type: str
    lines: list[str]
    label: str
    action: str = "event"  # or "correction", "withdrawal" (Broker.ingest_revisions)


def _jl(objs: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(o, ensure_ascii=False) for o in objs]


def build_day(seed: int) -> tuple[list[Step], datetime, datetime]:
    """The scripted day; returns (steps, theme switch time, next-morning sweep time)."""
    s = DaySynth(random.Random(seed))  # noqa: S311 - synthetic data, reproducible by seed
    morning, afternoon = DAY + timedelta(hours=7), DAY + timedelta(hours=14)
    theme_on = DAY + timedelta(hours=9)
    burglaries_am = [s.woninginbraak(morning) for _ in range(12)]
    burglaries_pm = [s.woninginbraak(afternoon) for _ in range(12)]
    d = DAY.date()
    bans = [s.gebiedsverbod(d - timedelta(days=30), d + timedelta(days=60)) for _ in range(3)]
    bans.append(s.gebiedsverbod(d - timedelta(days=90), d))  # ends today: tombstone tomorrow
    bans.append(s.gebiedsverbod(d - timedelta(days=90), d - timedelta(days=5)))  # already over
    bans.append(s.gebiedsverbod(d + timedelta(days=7), d + timedelta(days=97)))  # not yet
    returns = [s.detentie() for _ in range(6)]
    observations = [s.waarneming(DAY + timedelta(hours=h)) for h in range(8, 18)]

    bad_burglary = dict(burglaries_pm[0], event_id=s.uid())
    bad_burglary["occurred_until"] = "2026-05-12T03:00:00"  # no zone: bad input
    missing = {k: v for k, v in s.woninginbraak(afternoon).items() if k != "victim"}
    wrong_type = dict(s.woninginbraak(afternoon), attempt="ja")
    oversized = s.waarneming(afternoon)
    oversized["description"] = "x" * (17 * 1024)
    extra = dict(s.waarneming(afternoon), app_version="4.2.1", gps_accuracy=12)
    street, _ = WIJKEN[burglaries_am[0]["address"]["wijk"]]
    fixed = dict(burglaries_am[0], address=dict(  # the police fix a wrong address
        burglaries_am[0]["address"], street=street[(street.index(
            burglaries_am[0]["address"]["street"]) + 1) % len(street)],
        house_number=str(int(burglaries_am[0]["address"]["house_number"]) + 1)))
    lift = {"event_id": bans[0]["event_id"],
            "reason": "gebiedsverbod vervroegd opgeheven door het OM"}
    pm_lines = [*_jl(burglaries_pm), "{not json", json.dumps(bad_burglary),
                json.dumps(missing), json.dumps(wrong_type), json.dumps(burglaries_am[3])]
    steps = [
        Step(morning, "politie", "politie.woninginbraak", _jl(burglaries_am),
             "07:00 police feed, night's burglaries"),
        Step(morning + timedelta(hours=1), "om", "om.gebiedsverbod", _jl(bans),
             "08:00 OM area bans"),
        Step(DAY + timedelta(hours=10), "om", "om.detentie_uitstroom", _jl(returns),
             "10:00 detention returns"),
        Step(DAY + timedelta(hours=12), "politie", "politie.woninginbraak", _jl([fixed]),
             "12:00 police correct a burglary's address", "correction"),
        Step(afternoon, "politie", "politie.woninginbraak", pm_lines,
             "14:00 police feed, with bad lines and a resent event"),
        Step(DAY + timedelta(hours=16), "om", "om.gebiedsverbod", _jl([lift]),
             "16:00 OM lifts an area ban early", "withdrawal"),
        Step(DAY + timedelta(hours=18), "gemeente", "gemeente.boa_waarneming",
             [*_jl(observations), json.dumps(oversized), json.dumps(extra)],
             "18:00 boa observations, one oversized, one with extra fields"),
        Step(DAY + timedelta(hours=18, minutes=5), "gemeente", "politie.woninginbraak",
             _jl([s.woninginbraak(afternoon)]), "18:05 municipality sends a police type"),
    ]
    return steps, theme_on, DAY + timedelta(days=1, hours=6)


def run_demo(settings: Settings, *, explicit_data_dir: bool, seed: int,
             now: datetime | None, as_json: bool) -> int:
    if explicit_data_dir:
        data_dir = settings.data_dir
        if data_dir.exists() and any(data_dir.iterdir()):
            raise ConfigError(f"{data_dir}: the demo needs an empty data directory")
    else:
        data_dir = Path(tempfile.mkdtemp(prefix="covenant-demo-"))
    settings = settings.model_copy(update={"data_dir": data_dir})
    steps, theme_on, next_morning = build_day(seed)
    broker = Broker(settings)
    try:
        reports: list[tuple[Step, IngestReport]] = []
        theme_done = False
        for step in steps:
            if not theme_done and step.at >= theme_on:
                broker.switch_theme("woninginbraak", True, theme_on)
                theme_done = True
            inputs = [(f"line {i}", line.encode()) for i, line in enumerate(step.lines, 1)]
            reports.append((step, broker.ingest(step.source, step.event_type, inputs, step.at)
                            if step.action == "event" else broker.ingest_revisions(
                                step.action, step.source, step.event_type, inputs, step.at)))
        sweep_at = now or next_morning
        tombstones = broker.sweep_expiries(sweep_at)
        summary = _summary(broker, reports, tombstones, sweep_at, data_dir)
    finally:
        broker.close()
    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=2))
    else:
        print(_render(summary))
    return 0 if summary["audit"]["ok"] else 1


def _summary(broker: Broker, reports: list[tuple[Step, IngestReport]], tombstones: int,
             sweep_at: datetime, data_dir: Path) -> dict[str, Any]:
    schema = broker.registry.get("records.audit_entry")
    decisions: Counter[tuple[str, str, str]] = Counter()
    reasons: dict[tuple[str, str], Counter[str]] = {}
    for data in broker.log.audit_entries():
        entry = schema.decode(data)
        if entry["name"] != "decide":
            continue
        key = (entry["recipient"], entry["purpose"])
        decisions[(*key, entry["decision"])] += 1
        if entry["decision"] == "withhold":
            reasons.setdefault(key, Counter())[entry["reason_code"]] += 1
    streams = sorted({(r, p) for r, p, _ in decisions})
    examples = {}
    for recipient, purpose in streams:
        # Reading a stream is an access like any other, so it goes through the audited path.
        got = broker.consume(recipient, purpose, 0, sweep_at)
        if got:
            examples[f"{recipient} / {purpose}"] = got[0].record
    quarantine: Counter[str] = Counter()
    for _, report in reports:
        quarantine.update(q.reason_code for q in report.quarantined)
    verify = broker.verify_audit()
    header = broker.covenant.covenant
    return {
        "covenant": f"{header.id} v{header.version}", "data_dir": str(data_dir),
        "day": DAY.date().isoformat(), "sweep_at": iso_instant(sweep_at),
        "inputs": [{"step": step.label, "event_type": r.event_type, "source": r.source,
                    "accepted": r.accepted, "quarantined": len(r.quarantined),
                    "dropped_fields": sorted({f for _, fs in r.dropped_fields for f in fs})}
                   for step, r in reports],
        "quarantine_reasons": dict(sorted(quarantine.items())),
        "streams": [{"recipient": r, "purpose": p, "released": decisions[(r, p, "release")],
                     "withheld": decisions[(r, p, "withhold")],
                     "withheld_reasons": dict(sorted(reasons.get((r, p), Counter()).items()))}
                    for r, p in streams],
        "tombstones": tombstones, "examples": examples,
        "retractions": {r.action: r.retractions for _, r in reports if r.action != "event"},
        "audit": {"ok": verify.ok, "entries": verify.entries, "head": verify.head,
                  "problem": verify.problem},
    }


def _render(summary: dict[str, Any]) -> str:
    out = [f"covenant-broker demo: covenant {summary['covenant']}, a synthetic day "
           f"{summary['day']} (pinned clock)", ""]
    out.append(f"{'input':58} {'accepted':>8} {'quarantined':>11}")
    for item in summary["inputs"]:
        out.append(f"{item['step'][:58]:58} {item['accepted']:>8} {item['quarantined']:>11}")
        if item["dropped_fields"]:
            out.append(f"{'':4}unknown fields dropped (names only): "
                       f"{', '.join(item['dropped_fields'])}")
    reasons = ", ".join(f"{k} {v}" for k, v in summary["quarantine_reasons"].items())
    out += ["", f"quarantined by reason: {reasons or 'none'}", ""]
    out.append(f"{'recipient / purpose':56} {'released':>8} {'withheld':>8}  withheld because")
    for s in summary["streams"]:
        why = ", ".join(f"{k} {v}" for k, v in s["withheld_reasons"].items())
        out.append(f"{s['recipient'] + ' / ' + s['purpose']:56} {s['released']:>8} "
                   f"{s['withheld']:>8}  {why}")
    retracted = ", ".join(f"{n} after the {action}" for action, n in
                          summary["retractions"].items())
    out += ["", f"retractions (AVG art. 19): {retracted or 'none'}",
            f"expiry tombstones at {summary['sweep_at']}: {summary['tombstones']}", "",
            "one redacted record per stream:"]
    for stream, record in summary["examples"].items():
        out.append(f"  {stream}")
        out.append(f"    {json.dumps(record, ensure_ascii=False)}")
    audit = summary["audit"]
    out.append("")
    if audit["ok"]:
        out.append(f"audit verify: intact, {audit['entries']} entries, head {audit['head']}")
    else:
        out.append(f"audit verify: NOT intact: {audit['problem']}")
    out += ["", f"data directory: {summary['data_dir']}",
            f"  try: covenant-broker --data-dir {summary['data_dir']} consume "
            "--recipient boa-hor-noord"]
    return "\n".join(out)
