"""`subject erase` as one use case: crypto-shred the person (Broker.erase_subject), then,
where the backend keeps raw input (Kafka's ingress topics), purge what serve has consumed.

The purge is a capability the caller passes in (None where the backend has none), so this
module imports no backend. The erasure is done and audited before the purge; a purge that
fails is logged and reported as not done (serve purges at its interval anyway), never
turned into a failed erasure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from broker.app.service import Broker, ErasureReport
from broker.errors import BrokerError

IngressPurge = Callable[[], int]
"""Delete the ingress records serve has consumed, now; returns the partitions purged."""


@dataclass(frozen=True)
class SubjectErasure:
    erased: ErasureReport
    ingress_partitions_purged: int | None  # None: no raw input kept, or the purge failed


def erase_subject(broker: Broker, bsn: str, reason: str, now: datetime,
                  purge_ingress: IngressPurge | None) -> SubjectErasure:
    erased = broker.erase_subject(bsn, reason, now)
    purged: int | None = None
    if purge_ingress is not None:
        try:
            purged = purge_ingress()
        except BrokerError as exc:  # the erasure itself is done; serve purges at its interval
            broker.logger.warning("ingress purge failed", error=str(exc))
    return SubjectErasure(erased, purged)
