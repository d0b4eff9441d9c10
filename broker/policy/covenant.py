"""The covenant file: pydantic models and a loader that names file, key and line.

The YAML is the covenant as the parties signed it: parties, recipients, themes and
purposes, each purpose with its legal basis, retention, approvers, event type, recipients
with their scope, conditions and field rules. Structure is checked here; facts that need
the Avro schemas (field paths, view shapes) are checked by `policy.lint`.

The covenant is also the AVG art. 30 register of its processing activities
(`policy.register` prints it): each purpose names its `processing_activity_id` (a URI, the
LDV `dpl.core.processing_activity_id` of every decision under it), its controllers, the
categories of data subjects and personal data; each party its privacy officer (FG); the
covenant its security measures. These facts are required for every covenant, not only in
a stricter mode: art. 30 asks them of every controller, so a covenant without them cannot
be run accountably, and a missing one is refused at load like any other missing key.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PositiveInt,
    StrictBool,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from broker.config.yaml_file import YamlFileError, parse_yaml, read_bounded
from broker.errors import CovenantError

TRANSFORMS = ("keep", "hour", "day", "year", "postcode4", "pseudonymise", "mask")
Transform = Literal["keep", "hour", "day", "year", "postcode4", "pseudonymise", "mask"]
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Header(_Strict):
    id: str = Field(min_length=1)
    version: PositiveInt
    title: str = Field(min_length=1)
    signed_on: date | None = None
    valid_from: date
    valid_until: date
    timezone: str = "Europe/Amsterdam"

    @field_validator("timezone")
    @classmethod
    def _zone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("valid_until")
    @classmethod
    def _ordered(cls, value: date, info: ValidationInfo) -> date:
        start = info.data.get("valid_from")
        if isinstance(start, date) and value < start:
            raise ValueError(f"valid_until {value} is before valid_from {start}")
        return value


class Contact(_Strict):
    """How to reach someone: at least one of email, phone or address."""

    name: str = Field(min_length=1)
    email: str | None = None
    phone: str | None = None
    address: str | None = None

    @model_validator(mode="after")
    def _reachable(self) -> Contact:
        if not (self.email or self.phone or self.address):
            raise ValueError("a contact needs an email, phone or address")
        return self


class Party(_Strict):
    name: str = Field(min_length=1)
    contact: str | None = Field(default=None, description="the controller's own address")
    fg: Contact = Field(description="the party's privacy officer (FG, AVG art. 37-39)")


def _absolute_uri(value: str) -> str:
    """A processing activity id is an absolute URI (LDV: `dpl.core.processing_activity_id`
    is of type URI): a scheme, and for hierarchical schemes a host; no white space."""
    parts = urlsplit(value)
    if not parts.scheme or any(c.isspace() for c in value) or \
            not (parts.netloc or parts.path) or \
            (parts.scheme in ("http", "https") and not parts.netloc):
        raise ValueError(f"{value!r} is not an absolute URI (e.g. "
                         "urn:nl:<covenant>:v1:verwerkingsactiviteit:<purpose>)")
    return value


class Recipient(_Strict):
    party: str
    description: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)


class FieldRule(_Strict):
    """One released field: its source path (`from`, default the output name) and transform."""

    source: str | None = Field(default=None, alias="from")
    transform: Transform = "keep"
    keep_last: int | None = Field(default=None, ge=0, description="mask: characters left clear")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"transform": value} if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not _PATH.match(value):
            raise ValueError(f"{value!r} is not a dotted field path")
        return value


class _Reasoned(_Strict):
    reason: str | None = Field(default=None, description="withheld reason shown when it fails")


class FieldCondition(_Reasoned):
    """Compare an event field: with a constant, a list, or an attribute of the recipient."""

    field: str
    equals: Any = None
    one_of: list[Any] | None = None
    equals_recipient: str | None = None
    contains_recipient: str | None = None
    ignore_case: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_operator(cls, value: Any) -> Any:
        if isinstance(value, dict):
            ops = [k for k in ("equals", "one_of", "equals_recipient", "contains_recipient")
                   if k in value]
            if len(ops) != 1:
                raise ValueError("a field condition takes exactly one of equals, one_of, "
                                 "equals_recipient, contains_recipient")
        return value

    @property
    def operator(self) -> str:
        for name in ("one_of", "equals_recipient", "contains_recipient"):
            if getattr(self, name) is not None:
                return name
        return "equals"


class MaxAge(_Strict):
    field: str
    days: PositiveInt


class MaxAgeCondition(_Reasoned):
    max_age: MaxAge


class Window(_Strict):
    start: str = Field(alias="from")
    until: str


class ValidBetweenCondition(_Reasoned):
    valid_between: Window


class ThemeCondition(_Reasoned):
    theme: str


class CelCondition(_Reasoned):
    """A CEL expression for the rare condition the declarative forms cannot say.

    Only the bound event fields and the recipient's attributes (`recipient.<name>`) are in
    its context, which keeps it narrow and fast.
    """

    cel: str = Field(min_length=1)
    bind: dict[str, str] = Field(default_factory=dict)


def _condition_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key in ("max_age", "valid_between", "theme", "cel", "field"):
            if key in value:
                return key
        return None
    return _TAGS.get(type(value))


_TAGS: dict[type, str] = {FieldCondition: "field", MaxAgeCondition: "max_age",
                          ValidBetweenCondition: "valid_between", ThemeCondition: "theme",
                          CelCondition: "cel"}


Condition = Annotated[
    Annotated[FieldCondition, Tag("field")]
    | Annotated[MaxAgeCondition, Tag("max_age")]
    | Annotated[ValidBetweenCondition, Tag("valid_between")]
    | Annotated[ThemeCondition, Tag("theme")]
    | Annotated[CelCondition, Tag("cel")],
    Discriminator(
        _condition_kind,
        custom_error_type="unknown_condition",
        custom_error_message="a condition needs one of: field, max_age, valid_between, "
        "theme, cel",
    ),
]


class RecipientRule(_Strict):
    to: list[str] = Field(min_length=1)
    conditions: list[Condition] = Field(default_factory=list)


class Purpose(_Strict):
    description: str = ""
    processing_activity_id: Annotated[str, AfterValidator(_absolute_uri)] = Field(
        min_length=1, description="URI of the processing activity (AVG art. 30 register, "
        "LDV dpl.core.processing_activity_id); a new covenant version that changes the "
        "purpose gives it a new one")
    controllers: list[str] = Field(
        min_length=1, description="parties responsible; more than one are joint "
        "controllers (AVG art. 26)")
    data_subject_categories: list[str] = Field(min_length=1)
    personal_data_categories: list[str] = Field(min_length=1)
    security_measures: list[str] = Field(
        default_factory=list, description="measures of this purpose beyond the covenant's")
    third_country_transfers: list[str] = Field(
        default_factory=list, description="AVG art. 30(1)(e); empty means none")
    legal_basis: str = Field(min_length=1)
    retention_days: PositiveInt
    approved_by: list[str] = Field(min_length=1)
    event_type: str
    view: str
    conditions: list[Condition] = Field(default_factory=list)
    expires_after: str | None = Field(
        default=None, description="date field after which released records expire"
    )
    recipients: list[RecipientRule] = Field(min_length=1)
    fields: dict[str, FieldRule] = Field(min_length=1)
    # A running criminal investigation (Wpg), say: its disclosures stay out of subject
    # reports until two approvers lift the restriction (broker/app/confidential.py).
    # Strict: a quoted "yes" or "false" is a mistake, not a truthy string.
    confidential: StrictBool = Field(
        default=False, description="leave this purpose's entries out of subject reports "
        "until an audited four-eyes lift")

    def recipient_names(self) -> list[str]:
        return [name for rule in self.recipients for name in rule.to]


class Covenant(_Strict):
    covenant: Header
    parties: dict[str, Party] = Field(min_length=1)
    sources: list[str] = Field(min_length=1)
    recipients: dict[str, Recipient] = Field(min_length=1)
    themes: list[str] = Field(default_factory=list)
    security_measures: list[str] = Field(
        min_length=1, description="general description of the technical and organisational "
        "measures (AVG art. 30(1)(g)), for every purpose")
    purposes: dict[str, Purpose] = Field(min_length=1)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.covenant.timezone)

    def reference_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        """Names that must refer to something declared elsewhere in the file."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for name, recipient in self.recipients.items():
            if recipient.party not in self.parties:
                problems.append((("recipients", name, "party"),
                                 f"unknown party {recipient.party!r}"))
        for source in self.sources:
            if source not in self.parties:
                problems.append((("sources",), f"source {source!r} is not a party"))
        activities: dict[str, str] = {}
        for pname, purpose in self.purposes.items():
            base: tuple[str | int, ...] = ("purposes", pname)
            if not _NAME.match(pname):
                problems.append((base, "purpose names are lower case letters, digits, - and _"))
            for i, party in enumerate(purpose.approved_by):
                if party not in self.parties:
                    problems.append(((*base, "approved_by", i), f"unknown party {party!r}"))
            for i, party in enumerate(purpose.controllers):
                if party not in self.parties:
                    problems.append(((*base, "controllers", i), f"unknown party {party!r}"))
            other = activities.setdefault(purpose.processing_activity_id, pname)
            if other != pname:
                problems.append(((*base, "processing_activity_id"),
                                 f"purpose {other!r} has the same processing activity id; "
                                 "each purpose is an activity of its own"))
            source = purpose.event_type.split(".", 1)[0]
            if source not in self.sources:
                problems.append(((*base, "event_type"),
                                 f"event type {purpose.event_type!r} belongs to no source"))
            seen: set[str] = set()
            for r, rule in enumerate(purpose.recipients):
                for t, name in enumerate(rule.to):
                    if name not in self.recipients:
                        problems.append(((*base, "recipients", r, "to", t),
                                         f"recipient {name!r} is not listed in recipients"))
                    if name in seen:
                        problems.append(((*base, "recipients", r, "to", t),
                                         f"recipient {name!r} appears twice in this purpose"))
                    seen.add(name)
                problems.extend(self._condition_problems(
                    (*base, "recipients", r, "conditions"), rule.conditions, rule.to))
            problems.extend(self._condition_problems(
                (*base, "conditions"), purpose.conditions, purpose.recipient_names()))
        return problems

    def _condition_problems(
        self, base: tuple[str | int, ...], conditions: list[Any], recipients: list[str]
    ) -> list[tuple[tuple[str | int, ...], str]]:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for i, cond in enumerate(conditions):
            if isinstance(cond, ThemeCondition) and cond.theme not in self.themes:
                problems.append(((*base, i, "theme"), f"theme {cond.theme!r} is not in themes"))
            if isinstance(cond, FieldCondition) and cond.operator.endswith("_recipient"):
                attr = cond.equals_recipient or cond.contains_recipient
                for name in recipients:
                    known = self.recipients.get(name)
                    if known is not None and attr not in known.attributes:
                        problems.append(((*base, i, cond.operator),
                                         f"recipient {name!r} has no attribute {attr!r}"))
        return problems


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its closest existing parent."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if getattr(k, "value", None) == str(key)),
                        None)
            if pair is None:
                break
            line = pair[0].start_mark.line + 1  # the key's own line, not its value's
            node = pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and \
                key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _format(path: Path | str, loc: tuple[str | int, ...], msg: str, root: yaml.Node | None) -> str:
    key = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
    line = _line_of(root, loc)
    where = f" (line {line})" if line is not None else ""
    return f"{path}:{key or '<top>'}: {msg}{where}"


def _pydantic_loc(error: Any) -> tuple[str | int, ...]:
    # Tags of discriminated unions appear in loc; they are not keys of the file.
    tags = {"field", "max_age", "valid_between", "theme", "cel"}
    loc = tuple(error["loc"])
    cleaned: list[str | int] = []
    for i, part in enumerate(loc):
        if part in tags and i > 0 and isinstance(loc[i - 1], int):
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _refused(path: Path | str, exc: YamlFileError) -> CovenantError:
    where = "<file>" if exc.whole_file else "<yaml>"
    line = f" (line {exc.line})" if exc.line is not None else ""
    return CovenantError(str(path), [f"{path}:{where}: {exc.problem}{line}"])


def load_covenant(path: Path) -> Covenant:
    """Load and validate a covenant file; raise CovenantError with every problem found.

    The file is read bounded (at most MAX_YAML_BYTES + 1 bytes) and YAML aliases are
    refused, so a small hostile file cannot expand in memory (see config.yaml_file).
    """
    try:
        data = read_bounded(path)
    except YamlFileError as exc:
        raise _refused(path, exc) from None
    return parse_covenant(data, path)


def parse_covenant(text: str | bytes, path: Path | str) -> Covenant:
    """Validate covenant text; `path` names it in the problems (a file, or a stored version)."""
    try:
        root, data = parse_yaml(text, str(path))
    except YamlFileError as exc:
        raise _refused(path, exc) from None
    if not isinstance(data, dict):
        raise CovenantError(str(path), [f"{path}:<top>: expected a mapping of sections"])
    try:
        covenant = Covenant.model_validate(data)
    except ValidationError as exc:
        problems = [_format(path, _pydantic_loc(e), e["msg"], root) for e in exc.errors()]
        raise CovenantError(str(path), problems) from None
    problems = [_format(path, loc, msg, root) for loc, msg in covenant.reference_problems()]
    if problems:
        raise CovenantError(str(path), problems)
    return covenant
