"""What a plan returns, and the context it decides in. Plain dataclasses: the hot path."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from broker.policy.control import ControlState


@dataclass(frozen=True, slots=True)
class DecisionContext:
    now: datetime  # the decision time, UTC
    now_ms: int
    today: date  # the decision time's calendar date in the covenant's zone
    control: ControlState


@dataclass(frozen=True, slots=True)
class Release:
    view: dict[str, Any]
    fields_released: tuple[str, ...]  # source field paths the view draws on
    fields_withheld: tuple[str, ...]  # every other source field


@dataclass(frozen=True, slots=True)
class Withhold:
    code: str  # machine-readable: out_of_scope, theme_off, too_old, covenant_expired, ...
    reason: str  # for people; names fields and rules, never personal values


Decision = Release | Withhold
