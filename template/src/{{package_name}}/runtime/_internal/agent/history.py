"""Trimming a conversation to a token budget by whole turns.

A turn is a user message and everything after it up to the next user message:
the assistant's replies, its tool calls and their results. Dropping whole turns,
oldest first, can never separate a tool call from its result, and the newest
turn (the one being answered) is always kept.
"""

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Trim:
    first_kept: int
    dropped_tokens: int
    kept_tokens: int


def trim_to_budget(costs: Sequence[int], starts_turn: Sequence[bool], budget: int) -> Trim:
    """Find the first message to keep so that the kept messages cost at most `budget`.

    `costs[i]` is message i's token count; `starts_turn[i]` is true for user messages.
    Messages before the first user message form a turn of their own. If the newest
    turn alone is over budget it is still kept: the caller decides what that means.
    """
    total = sum(costs)
    first_kept = 0
    dropped = 0
    boundaries = [i for i, starts in enumerate(starts_turn) if starts and i > 0]
    for boundary in boundaries:
        if total - dropped <= budget:
            break
        dropped += sum(costs[first_kept:boundary])
        first_kept = boundary
    return Trim(first_kept=first_kept, dropped_tokens=dropped, kept_tokens=total - dropped)
