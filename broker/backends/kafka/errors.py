"""kafka-python errors translated into the broker's error family, at the adapter edge.

Every call into kafka-python from the Kafka backend runs inside `kafka_errors(what)`, so
callers see only BrokerError subclasses:

* `WriterFencedError`: another producer with the same transactional id started (a rebalance
  moved the partition, or a second command took the commands chain). The transaction is
  lost; the writer re-initialises, recovers its state and tries again. Retriable.
* `TransientBackendError`: a failure that may pass (leader election, coordinator moving,
  timeouts, no broker reachable yet). Retriable with backoff.
* `StorageError`: anything else (authorisation, invalid configuration, a topic that does
  not exist). Fatal: the command stops with the message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from kafka import errors as kerr

from broker.errors import BrokerError, StorageError, TransientBackendError

T = TypeVar("T")

_FENCED: tuple[type[Exception], ...] = (
    kerr.ProducerFencedError, kerr.InvalidProducerEpochError,
    kerr.TransactionCoordinatorFencedError, kerr.FencedInstanceIdError,
)
# Group membership moved on while we held a batch: the batch must be redone by the owner.
_GROUP_MOVED: tuple[type[Exception], ...] = (
    kerr.IllegalGenerationError, kerr.UnknownMemberIdError, kerr.RebalanceInProgressError,
    kerr.CommitFailedError,
)
_TRANSIENT: tuple[type[Exception], ...] = (
    kerr.KafkaTimeoutError, kerr.KafkaConnectionError, kerr.TransactionAbortableError,
    kerr.ConcurrentTransactionsError,
)


class WriterFencedError(TransientBackendError):
    """A newer writer holds this transactional id; re-initialise and recover before retrying."""


class GroupMovedError(TransientBackendError):
    """The consumer group rebalanced under a batch; its offsets cannot commit."""


def translate(exc: Exception, what: str) -> BrokerError:
    """The BrokerError for a kafka-python exception raised while doing `what`."""
    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, _FENCED):
        return WriterFencedError(f"{what}: fenced by a newer writer ({name})")
    if isinstance(exc, _GROUP_MOVED):
        return GroupMovedError(f"{what}: the consumer group rebalanced ({name})")
    if isinstance(exc, kerr.KafkaTimeoutError) and "bootstrap" in text:
        return TransientBackendError(f"{what}: no Kafka broker reachable ({text})")
    if isinstance(exc, _TRANSIENT) or getattr(exc, "retriable", False):
        return TransientBackendError(f"{what}: {name}: {text}")
    if isinstance(exc, kerr.AuthorizationError | kerr.SaslAuthenticationFailedError):
        return StorageError(f"{what}: not authorised ({name}); check the credentials and "
                            "ACLs of this client")
    return StorageError(f"{what}: {name}: {text}")


@contextmanager
def kafka_errors(what: str) -> Iterator[None]:
    """Translate kafka-python exceptions raised in the block; let BrokerErrors pass."""
    try:
        yield
    except BrokerError:
        raise
    except (kerr.KafkaError, AssertionError) as exc:
        # kafka-python raises AssertionError for some protocol misuses, e.g. a send on a
        # producer whose transaction state was failed by a fence.
        raise translate(exc, what) from exc


def retrying(fn: Callable[[], T], *, attempts: int, backoff_ms: int,
             on_retry: Callable[[BrokerError], None] | None = None) -> T:
    """Call fn; retry TransientBackendErrors with jittered exponential backoff."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except TransientBackendError as exc:
            if attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(exc)
            delay = min(10.0, backoff_ms / 1000 * 2 ** (attempt - 1))
            time.sleep(delay * (0.5 + random.random() / 2))  # noqa: S311 - jitter, not crypto
    raise AssertionError("unreachable")  # pragma: no cover
