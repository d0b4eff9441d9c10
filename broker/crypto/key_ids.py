"""Data key ids: ``<subject>|<retention date>|<16 random hex digits>``.

The random part makes an id unique per created key, so key stores in separate processes
(SQLite files shared by processes, the Kafka key topic) never clash: two writers that
create a key for the same subject and date at once each keep their own. Subjects never
hold '|' (``bsn:<pseudonym>``, ``record:<pseudonym>``, ``quarantine:<day>``), so the
subject is everything before the first '|'; ids of the older form ``<subject>|<date>``
read the same way.
"""

from __future__ import annotations

import secrets
from datetime import date


def new_key_id(subject: str, retention_until: date) -> str:
    """A fresh key id for (subject, date): no other writer can create the same one."""
    return f"{subject}|{retention_until.isoformat()}|{secrets.token_hex(8)}"


def subject_of(key_id: str) -> str:
    """The subject a key id names."""
    return key_id.split("|", 1)[0]
