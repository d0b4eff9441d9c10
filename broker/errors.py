"""One error hierarchy for the whole broker.

Driver errors (sqlite3, kafka-python, fastavro) are translated into these at the edge
where they occur, so callers handle one family. `retriable` tells a loop whether trying
again can help.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Root of every error the broker raises on purpose."""

    retriable: bool = False


class ConfigError(BrokerError):
    """A configuration file or setting is invalid; the message names the file and key."""


class KeyFileError(ConfigError):
    """A key file is missing, replaced or malformed where data depends on it: restore it
    from backup (broker/keys.py never makes a new one there)."""


class UnsafeFileError(ConfigError):
    """A secret or personal-data file (or its directory) that others could read or that
    another user owns; the message names the file, its mode and the fix."""


class CovenantError(BrokerError):
    """A covenant file is invalid; `problems` holds one `file:key: problem` line each."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problems))


class PolicyError(BrokerError):
    """A covenant change that may not take effect (too few approvers, a version downgrade)."""


class SchemaError(BrokerError):
    """An Avro schema in schemas/ is missing or invalid."""


class UnknownSourceError(BrokerError):
    """A source or event type that the covenant and schemas do not know."""


class InputError(BrokerError):
    """Input that cannot be read at all (a missing file, for example)."""


class TrustAnchorError(InputError):
    """A key or checkpoint given to check the log against (a pinned verifier key, a PEM
    public key, a kept checkpoint) is unreadable or malformed. The message names the option
    or file it came from: nothing could be checked, so this is "could not run", never a
    finding about the log."""


class InvalidEvent(BrokerError):  # noqa: N818 - reads as a verdict on the input, like ValueError
    """One event is bad input. It is quarantined with `code` and `reason`, never raised past ingest.

    The reason names fields and rules, never the values: it is written to the audit log.
    """

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class StorageError(BrokerError):
    """The event log backend failed (disk, database, broker)."""


class AuditIntegrityError(BrokerError):
    """The audit log does not verify; the message names the first bad entry."""


class TransientBackendError(StorageError):
    """A backend failure that may pass (a leader election, a busy database)."""

    retriable = True
