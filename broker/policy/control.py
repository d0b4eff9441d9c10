"""Control state: the fold of control events (theme switches) the decisions depend on.

Themes start off. The latest switch at or before the decision time applies; among
switches at the same instant, the one recorded last wins.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ThemeSwitch:
    theme: str
    on: bool
    effective_ms: int
    seq: int  # order of recording, breaks ties at the same instant


@dataclass
class ControlState:
    _themes: dict[str, list[tuple[int, int, bool]]] = field(default_factory=dict)

    @classmethod
    def fold(cls, switches: list[ThemeSwitch]) -> ControlState:
        state = cls()
        for switch in switches:
            state.apply(switch)
        return state

    def apply(self, switch: ThemeSwitch) -> None:
        bisect.insort(self._themes.setdefault(switch.theme, []),
                      (switch.effective_ms, switch.seq, switch.on))

    def theme_on(self, theme: str, at_ms: int) -> bool:
        history = self._themes.get(theme)
        if not history:
            return False
        i = bisect.bisect_right(history, (at_ms, float("inf"), True))
        return history[i - 1][2] if i else False
