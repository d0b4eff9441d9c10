"""Control state: the fold of control events the decisions depend on.

Control events are theme switches, covenant version activations and pseudonymisation
key rotations. For each, the latest event at or before the decision time applies; among
events at the same instant, the one recorded last wins. Themes start off; with no
activation the configured covenant file applies; every purpose starts at key version 1.
"""

from __future__ import annotations

import bisect
import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThemeSwitch:
    theme: str
    on: bool
    effective_ms: int
    seq: int  # order of recording, breaks ties at the same instant


@dataclass(frozen=True)
class ControlEvent:
    """One stored control event; `value` is text ("on"/"off", or JSON for the others)."""

    kind: str  # "theme", "covenant", "key_rotation"
    name: str  # theme name, covenant id, or purpose
    value: str
    effective_ms: int
    recorded_ms: int
    seq: int = 0


@dataclass(frozen=True)
class CovenantActivation:
    covenant_id: str
    version: int
    sha256: str
    approvers: tuple[str, ...]
    effective_ms: int
    seq: int


@dataclass
class ControlState:
    _themes: dict[str, list[tuple[int, int, bool]]] = field(default_factory=dict)

    @classmethod
    def fold(cls, switches: list[ThemeSwitch]) -> ControlState:
        state = cls()
        for switch in switches:
            state.apply(switch)
        return state

    _covenants: list[tuple[int, int, CovenantActivation]] = field(default_factory=list)
    _keys: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)

    @classmethod
    def from_events(cls, events: list[ControlEvent]) -> ControlState:
        state = cls()
        for event in events:
            if event.kind == "theme":
                state.apply(ThemeSwitch(event.name, event.value == "on", event.effective_ms,
                                        event.seq))
            elif event.kind == "covenant":
                data = json.loads(event.value)
                activation = CovenantActivation(
                    event.name, int(data["version"]), data["sha256"],
                    tuple(data["approvers"]), event.effective_ms, event.seq)
                bisect.insort(state._covenants, (event.effective_ms, event.seq, activation),
                              key=lambda item: (item[0], item[1]))
            elif event.kind == "key_rotation":
                bisect.insort(state._keys.setdefault(event.name, []),
                              (event.effective_ms, event.seq, int(event.value)))
        return state

    def covenant_at(self, at_ms: int) -> CovenantActivation | None:
        i = bisect.bisect_right(self._covenants, (at_ms, float("inf")),
                                key=lambda item: (item[0], item[1]))
        return self._covenants[i - 1][2] if i else None

    @property
    def activations(self) -> list[CovenantActivation]:
        return [item[2] for item in self._covenants]

    def key_version(self, purpose: str, at_ms: int) -> int:
        history = self._keys.get(purpose)
        if not history:
            return 1
        i = bisect.bisect_right(history, (at_ms, float("inf"), 0))
        return history[i - 1][2] if i else 1

    def latest_key_version(self, purpose: str) -> int:
        history = self._keys.get(purpose)
        return max(v for _, _, v in history) if history else 1

    def apply(self, switch: ThemeSwitch) -> None:
        bisect.insort(self._themes.setdefault(switch.theme, []),
                      (switch.effective_ms, switch.seq, switch.on))

    def theme_on(self, theme: str, at_ms: int) -> bool:
        history = self._themes.get(theme)
        if not history:
            return False
        i = bisect.bisect_right(history, (at_ms, float("inf"), True))
        return history[i - 1][2] if i else False
