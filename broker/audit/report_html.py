"""The subject report as one self-contained HTML page in Dutch, for the person it is about.

No scripts, no external stylesheets, fonts or images: the page can be mailed, printed or
archived as is. Every value from the log is HTML-escaped. Times show in the covenant's
zone. The proofs are in collapsed sections with the command that checks them.
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

_MONTHS = ["januari", "februari", "maart", "april", "mei", "juni", "juli", "augustus",
           "september", "oktober", "november", "december"]

_SECTIONS = [
    ("disclosures", "Verstrekt",
     "Gegevens over u die aan een ontvanger zijn verstrekt, of waarvan de ontvanger is "
     "verteld dat ze niet meer gebruikt mogen worden."),
    ("withheld", "Niet verstrekt",
     "Gegevens over u die het convenant niet toestond te verstrekken. De ontvanger heeft "
     "ze niet gekregen; dit staat hier zodat u ziet dat de regels zijn toegepast."),
    ("accesses", "Opgehaald door de ontvanger",
     "Momenten waarop een ontvanger verstrekte gegevens over u heeft opgehaald."),
    ("other", "Overige handelingen", "Andere vastgelegde handelingen over u."),
]

_DECISIONS = {"release": "verstrekt", "withhold": "niet verstrekt",
              "expire": "vervallen: de ontvanger is gemeld dat de grond is beëindigd",
              "erase": "gewist: de ontvanger is gemeld dat uw gegevens zijn gewist",
              "retract": "ingetrokken: de bron heeft het gegeven gecorrigeerd of "
                         "teruggetrokken, de ontvanger is gemeld"}
_ACTIONS = {"decide": "besluit", "tombstone": "vervalmelding", "access": "opgehaald",
            "erasure": "verwijdering", "quarantine": "geweigerde invoer",
            "control": "beheerhandeling", "correction": "correctie door de bron",
            "withdrawal": "intrekking door de bron",
            "party_read": "opgevraagd door een convenantpartij (de bron van de gegevens)"}

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;max-width:60rem;
margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:2px solid #154273}
.item{border:1px solid #c8c8c8;border-radius:6px;padding:.75rem 1rem;margin:1rem 0}
dl{display:grid;grid-template-columns:14rem 1fr;gap:.25rem 1rem;margin:0}
dt{font-weight:600}dd{margin:0}code,pre{font-family:ui-monospace,Consolas,monospace;
font-size:.85rem}pre{white-space:pre-wrap;word-break:break-all;background:#f3f3f3;
padding:.5rem}.muted{color:#555}.summary td,.summary th{padding:.2rem .8rem;text-align:left}
@media print{details{display:block}}
"""


def _when(iso: str | None, zone: ZoneInfo) -> str:
    if not iso:
        return "onbekend"
    moment = datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(zone)
    return (f"{moment.day} {_MONTHS[moment.month - 1]} {moment.year}, "
            f"{moment.hour:02d}:{moment.minute:02d} uur")


def _list(values: list[str]) -> str:
    if not values:
        return "<span class=muted>geen</span>"
    return ", ".join(f"<code>{escape(v)}</code>" for v in values)


def _row(label: str, value_html: str) -> str:
    return f"<dt>{escape(label)}</dt><dd>{value_html}</dd>"


def _text(value: Any) -> str:
    return escape(str(value)) if value not in (None, "") else "<span class=muted>—</span>"


def _item(item: dict[str, Any], zone: ZoneInfo) -> str:
    rows = [
        _row("Datum en tijd", escape(_when(item.get("time"), zone))),
        _row("Handeling", escape(_ACTIONS.get(item["action"], item["action"]))
             + (f" — {escape(_DECISIONS.get(item['decision'], item['decision']))}"
                if item.get("decision") else "")),
    ]
    if item.get("recipient"):
        described = item.get("recipient_description")
        rows.append(_row("Ontvanger", f"<code>{escape(item['recipient'])}</code>"
                         + (f" — {escape(described)}" if described else "")))
    if item.get("purpose"):
        described = item.get("purpose_description")
        rows.append(_row("Doel", f"<code>{escape(item['purpose'])}</code>"
                         + (f" — {escape(described)}" if described else "")))
    rows += [
        _row("Rechtsgrond", _text(item.get("legal_basis"))),
        _row("Convenant", _text(f"{item['covenant_id']}, versie {item['covenant_version']}"
                                if item.get("covenant_id") else None)),
        _row("U komt voor als", _list(item.get("roles") or [])),
    ]
    if item["action"] in ("decide", "tombstone"):
        rows += [_row("Verstrekte gegevens", _list(item.get("fields_released") or [])),
                 _row("Niet verstrekte gegevens", _list(item.get("fields_withheld") or []))]
    if item.get("reason"):
        rows.append(_row("Reden", _text(item["reason"])))
    rows += [_row("Soort melding", _text(item.get("event_type"))),
             _row("Volgnummer in het logboek", _text(item["seq"])),
             _row("Vastgelegd op", escape(_when(item.get("logged_at"), zone)))]
    if item.get("restricted"):
        rows.append(_row("Beperking", "ja — deze regel valt onder een beperking en staat "
                         "niet in het overzicht voor de betrokkene"))
    proof = item.get("proof")
    if proof:
        hashes = "\n".join(proof["inclusion_proof"]) or "(leeg: de boom heeft één blad)"
        if "entry_base64" in proof:
            leaf = f"<p>Vastgelegde regel (base64):</p><pre>{escape(proof['entry_base64'])}</pre>"
        else:
            leaf = ("<p>Deze regel noemt ook andere personen; daarom staat hier alleen de "
                    f"vingerafdruk (leaf hash):</p><pre>{escape(proof['leaf_hash'])}</pre>")
        proof_html = (
            "<details><summary>Bewijs van opname in het ondertekende logboek</summary>"
            f"<p>Regel {proof['log_index']} van de {proof['tree_size']} regels die het "
            f"ondertekende controlepunt onderaan deze pagina vastlegt.</p>{leaf}"
            f"<p>Opnamebewijs (RFC 9162, base64):</p><pre>{escape(hashes)}</pre></details>")
    else:
        proof_html = ("<p class=muted>Nog niet door een ondertekend controlepunt gedekt; "
                      "vraag later een nieuw overzicht op.</p>")
    return f"<div class=item><dl>{''.join(rows)}</dl>{proof_html}</div>"


def render_html(report: dict[str, Any], zone: ZoneInfo) -> str:
    summary = report["summary"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="nl"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>Overzicht van verstrekkingen over u</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Overzicht van verstrekkingen over u</h1>",
        "<p>Dit overzicht (inzage volgens artikel 15 AVG) toont elke keer dat gegevens over u "
        "onder het convenant zijn gedeeld of juist niet gedeeld: wat, aan wie, wanneer, "
        "waarvoor en op welke rechtsgrond. Uw burgerservicenummer staat niet in dit "
        "overzicht en niet in het logboek: u wordt daar aangeduid met een sleutel-"
        "afhankelijke schuilnaam.</p>",
        "<table class=summary>",
        f"<tr><th>Schuilnaam</th><td><code>{escape(report['subject']['pseudonym'])}</code>"
        "</td></tr>",
        f"<tr><th>Opgesteld op</th><td>{escape(_when(report['generated_at'], zone))}</td></tr>",
        f"<tr><th>Verstrekt</th><td>{summary['disclosures']}</td></tr>",
        f"<tr><th>Niet verstrekt</th><td>{summary['withheld']}</td></tr>",
        f"<tr><th>Opgehaald</th><td>{summary['accesses']}</td></tr>",
        "</table>",
    ]
    if (report.get("restriction") or {}).get("applies"):
        # Neither which purpose nor how many: the same words for every person.
        parts.append(
            "<p class=muted><strong>Beperking.</strong> Voor sommige verwerkingen onder het "
            "convenant geldt op dit moment een beperking van het inzagerecht, bijvoorbeeld "
            "in het belang van een lopend strafrechtelijk onderzoek. Verstrekkingen die "
            "daaronder vallen staan niet in dit overzicht. Of dat voor u zo is, kan dit "
            "overzicht niet zeggen. Is de beperking opgeheven, dan staan ze in een nieuw "
            "overzicht.</p>")
    for key, title, intro in _SECTIONS:
        items = report[key]
        if key == "other" and not items:
            continue
        parts.append(f"<h2>{escape(title)} ({len(items)})</h2><p>{escape(intro)}</p>")
        if not items:
            parts.append("<p class=muted>Niets vastgelegd.</p>")
        parts.extend(_item(item, zone) for item in items)
    parts += [
        "<h2>Controle</h2>",
        "<p>Het logboek is een Merkle-boom (RFC 9162). Een onafhankelijke controleur kan "
        "elke regel hierboven nagaan met de openbare sleutel van het logboek, zonder "
        "toegang tot het logboek zelf: met het overzicht als JSON en <code>covenant-broker "
        "audit verify-report</code>.</p>",
        f"<p>Logboek: <code>{escape(report['origin'])}</code><br>Openbare sleutel: "
        f"<code>{escape(report['verifier_key'])}</code></p>",
        "<p>Volledig tot en met controlepunt: "
        f"{int(report['complete_up_to']['size'])} regels, boomwortel "
        f"<code>{escape(str(report['complete_up_to']['root']))}</code></p>",
        "<p>Ondertekend controlepunt:</p>",
        f"<pre>{escape(report['checkpoint'] or 'nog geen')}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
