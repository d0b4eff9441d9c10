"""The register of processing activities (AVG art. 30(1)) of one covenant version.

Every fact comes from the covenant file as the parties signed it, so the register cannot
drift from what the broker enforces: one activity per purpose, named by its
`processing_activity_id` (the URI every decision under it carries, LDV
`dpl.core.processing_activity_id`). What each art. 30(1) point is made of:

  (a) controllers, joint controllers, their FG   purpose.controllers -> parties (+ fg)
  (b) purpose                                     the purpose's name, description, basis
  (c) categories of data subjects / of data       purpose.data_subject_categories, ...
  (d) recipients                                  the purpose's recipients, each by name
                                                  (specific, as CJEU C-154/21 asks), party
  (e) transfers to third countries                purpose.third_country_transfers (none)
  (f) time limits for erasure                     purpose.retention_days (+ expires_after)
  (g) security measures                           covenant + purpose security_measures

Three renderings of one `Register` dict: JSON, CSV (one row per activity, lists joined
with "; "), and a self-contained HTML page in Dutch (no scripts, no external files).
"""

from __future__ import annotations

import csv
import io
import json
from html import escape
from typing import Any

from broker.policy.covenant import Covenant, Party

FORMAT = "covenant-broker/avg-art30-register/v1"
FORMATS = ("json", "csv", "html")
CSV_COLUMNS = ["processing_activity_id", "purpose", "description", "controllers",
               "joint_controllers", "fg_contacts", "legal_basis", "data_subject_categories",
               "personal_data_categories", "recipients", "third_country_transfers",
               "retention_days", "security_measures", "event_type", "covenant_id",
               "covenant_version"]


def _party(key: str, party: Party) -> dict[str, Any]:
    fg = {k: v for k, v in party.fg.model_dump().items() if v is not None}
    return {"party": key, "name": party.name, "contact": party.contact, "fg": fg}


def build_register(covenant: Covenant, sha256: str) -> dict[str, Any]:
    """The register of `covenant`, whose text has SHA-256 `sha256` (the version's identity)."""
    header = covenant.covenant
    activities = []
    for name, purpose in covenant.purposes.items():
        recipients = [{"recipient": r, "party": covenant.recipients[r].party,
                       "party_name": covenant.parties[covenant.recipients[r].party].name,
                       "description": covenant.recipients[r].description}
                      for r in purpose.recipient_names()]
        retention = f"{purpose.retention_days} dagen na verstrekking"
        if purpose.expires_after:
            retention += f", of eerder: vervalt na het veld {purpose.expires_after}"
        activities.append({
            "processing_activity_id": purpose.processing_activity_id,
            "purpose": name,
            "description": purpose.description,
            "controllers": [_party(p, covenant.parties[p]) for p in purpose.controllers],
            "joint_controllers": len(purpose.controllers) > 1,
            "legal_basis": purpose.legal_basis,
            "data_subject_categories": list(purpose.data_subject_categories),
            "personal_data_categories": list(purpose.personal_data_categories),
            "recipients": recipients,
            "third_country_transfers": list(purpose.third_country_transfers),
            "retention_days": purpose.retention_days,
            "retention": retention,
            "security_measures": [*covenant.security_measures, *purpose.security_measures],
            "event_type": purpose.event_type,
            "released_fields": sorted(purpose.fields),
            "approved_by": list(purpose.approved_by),
        })
    return {
        "format": FORMAT,
        "covenant": {"id": header.id, "version": header.version, "title": header.title,
                     "signed_on": header.signed_on.isoformat() if header.signed_on else None,
                     "valid_from": header.valid_from.isoformat(),
                     "valid_until": header.valid_until.isoformat(), "sha256": sha256},
        "parties": [_party(k, p) for k, p in covenant.parties.items()],
        "activities": activities,
    }


def _fg_text(controller: dict[str, Any]) -> str:
    fg = controller["fg"]
    reach = ", ".join(fg[k] for k in ("email", "phone", "address") if k in fg)
    return f"{controller['party']}: {fg['name']} ({reach})"


def render_json(register: dict[str, Any]) -> str:
    return json.dumps(register, ensure_ascii=False, indent=2) + "\n"


def render_csv(register: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    cov = register["covenant"]
    for a in register["activities"]:
        writer.writerow({
            "processing_activity_id": a["processing_activity_id"], "purpose": a["purpose"],
            "description": a["description"],
            "controllers": "; ".join(f"{c['party']} ({c['name']})" for c in a["controllers"]),
            "joint_controllers": "ja" if a["joint_controllers"] else "nee",
            "fg_contacts": "; ".join(_fg_text(c) for c in a["controllers"]),
            "legal_basis": a["legal_basis"],
            "data_subject_categories": "; ".join(a["data_subject_categories"]),
            "personal_data_categories": "; ".join(a["personal_data_categories"]),
            "recipients": "; ".join(f"{r['recipient']} ({r['party']})"
                                    for r in a["recipients"]),
            "third_country_transfers": "; ".join(a["third_country_transfers"]) or "geen",
            "retention_days": a["retention_days"],
            "security_measures": "; ".join(a["security_measures"]),
            "event_type": a["event_type"], "covenant_id": cov["id"],
            "covenant_version": cov["version"]})
    return out.getvalue()


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;max-width:64rem;
margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:2px solid #154273}
dl{display:grid;grid-template-columns:16rem 1fr;gap:.25rem 1rem;margin:0}
dt{font-weight:600}dd{margin:0}code{font-family:ui-monospace,Consolas,monospace;
font-size:.85rem;word-break:break-all}ul{margin:0;padding-left:1.2rem}.muted{color:#555}
"""


def _ul(values: list[str]) -> str:
    if not values:
        return "<span class=muted>geen</span>"
    return "<ul>" + "".join(f"<li>{escape(v)}</li>" for v in values) + "</ul>"


def activity_rows(a: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, HTML) rows of one activity: the page below and the FG console share them."""
    controllers = [f"{c['name']} ({c['party']})" + (f", {c['contact']}" if c["contact"] else "")
                   for c in a["controllers"]]
    return [
        ("Verwerkingsactiviteit (URI)", f"<code>{escape(a['processing_activity_id'])}</code>"),
        ("Doel", escape(a["description"] or a["purpose"])),
        ("Rechtsgrond", escape(a["legal_basis"])),
        ("Gezamenlijk verwerkingsverantwoordelijken" if a["joint_controllers"]
         else "Verwerkingsverantwoordelijke", _ul(controllers)),
        ("Functionaris gegevensbescherming", _ul([_fg_text(c) for c in a["controllers"]])),
        ("Categorieën betrokkenen", _ul(a["data_subject_categories"])),
        ("Categorieën persoonsgegevens", _ul(a["personal_data_categories"])),
        ("Ontvangers", _ul([f"{r['recipient']}: {r['description'] or r['party_name']} "
                            f"({r['party']})" for r in a["recipients"]])),
        ("Doorgifte buiten de EER", _ul(a["third_country_transfers"])),
        ("Bewaartermijn", escape(a["retention"])),
        ("Beveiligingsmaatregelen", _ul(a["security_measures"])),
    ]


def render_html(register: dict[str, Any]) -> str:
    cov = register["covenant"]
    parts = [
        "<!DOCTYPE html>", '<html lang="nl"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Register van verwerkingsactiviteiten · {escape(cov['title'])}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Register van verwerkingsactiviteiten (AVG art. 30)</h1>",
        f"<p>{escape(cov['title'])}: convenant <code>{escape(cov['id'])}</code>, versie "
        f"{cov['version']}, geldig van {escape(cov['valid_from'])} tot en met "
        f"{escape(cov['valid_until'])}. Tekst (SHA-256) <code>{escape(cov['sha256'])}</code>."
        "</p>",
    ]
    for a in register["activities"]:
        parts.append(f"<h2 id=\"{escape(a['purpose'])}\">{escape(a['purpose'])}</h2><dl>")
        parts += [f"<dt>{escape(label)}</dt><dd>{html}</dd>" for label, html in
                  activity_rows(a)]
        parts.append("</dl>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def render(register: dict[str, Any], fmt: str) -> str:
    renderers = {"json": render_json, "csv": render_csv, "html": render_html}
    return renderers[fmt](register)
