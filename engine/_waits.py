"""What a workflow waits on: leaves (an activity, child, timer or signal) and groups.

The interpreter keeps one tree of these per current ``yield``: a leaf, or a group
(``All``, ``Any``, or a ``WaitSignal`` with a deadline: a signal leaf racing a
timer leaf).  Pure data; every rule about them is the interpreter's.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = ["ACTIVITY", "ALL", "ANY", "CHILD", "SIGNAL", "TIMEOUT", "TIMER", "Group", "Leaf", "Wait"]

ACTIVITY: Final = "activity"
CHILD: Final = "child"
TIMER: Final = "timer"
SIGNAL: Final = "signal"
ALL: Final = "all"
ANY: Final = "any"
TIMEOUT: Final = "timeout"


class Wait:
    __slots__ = ("done", "parent", "seq", "slot")

    def __init__(self, seq: int, parent: Group | None, slot: int) -> None:
        self.seq = seq
        self.parent = parent
        self.slot = slot
        self.done = False


class Leaf(Wait):
    __slots__ = ("child_id", "kind", "name", "rtype")

    def __init__(
        self, seq: int, parent: Group | None, slot: int, kind: str, name: str, rtype: Any
    ) -> None:
        # NB: no super().__init__(): a leaf is made per command, on the replay hot path
        self.seq = seq
        self.parent = parent
        self.slot = slot
        self.done = False
        self.kind = kind
        self.name = name
        self.rtype = rtype
        self.child_id = ""  # a child workflow's id, for ChildWorkflowError


class Group(Wait):
    __slots__ = ("children", "mode", "remaining", "results")

    def __init__(self, seq: int, parent: Group | None, slot: int, mode: str, size: int) -> None:
        super().__init__(seq, parent, slot)
        self.mode = mode
        self.children: list[Wait] = []
        self.results: list[Any] = [None] * size
        self.remaining = size
