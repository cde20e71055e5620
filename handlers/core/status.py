"""Exit states: the only place they are defined.

Consul's script checks read 0 as passing, 1 as warning and anything else as
critical, so UNKNOWN (3) shows as *critical* in Consul. The heal handler never
acts on an UNKNOWN: it re-observes for itself and holds when it cannot decide.
"""
import enum
from collections import namedtuple


class Status(enum.IntEnum):
    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def worst(states):
    """The most severe of `states` (UNKNOWN > CRITICAL > WARNING > OK); OK when empty."""
    return max(states, default=Status.OK)


class Outcome(namedtuple("Outcome", "status text")):
    """What a command returns to the wrapper: an exit state and the text to print.

    `text` is the full plugin output; its first line is the status line.
    """
    __slots__ = ()
