"""Symbols of an evaluation set that training never saw: characters, words, tags or labels.

A real test set holds some. Each evaluation scores them the way its field does (an unknown character or word is
an `<unk>` whose loss counts; an unseen tag or label is a gold answer the model can never give, so it counts
wrong) and reports how many there were, because a score means little without knowing that:

    unseen = Unseen.count(["a", "æ", "b", "æ"], known={"a", "b"}, kind="character", unit="place")
    str(unseen)              # "unseen in training: 1 character (æ) in 2 places"
    unseen.counts            # {"æ": 2}
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable, NamedTuple

SHOWN = 10  # at most this many symbols are listed by name
PREPOSITIONS = {"place": "in", "token": "on", "example": "on"}  # "in 12 places", "on 5 tokens", "on 4 examples"


class Unseen(NamedTuple):
    kind: str  # what the symbols are: "character", "word", "tag" or "label"
    unit: str  # what one occurrence is: "place" (a position in a text), "token" or "example"
    counts: dict[str, int]  # symbol -> occurrences, most frequent first (ties: in order of first occurrence)

    @classmethod
    def count(cls, symbols: Iterable[str], known, kind: str, unit: str) -> Unseen:
        """The symbols (one per occurrence) that are not in `known` (a set, dict or list), counted."""
        if unit not in PREPOSITIONS:
            raise ValueError(f"unit must be one of {sorted(PREPOSITIONS)}, got {unit!r}")
        known = known if isinstance(known, (set, frozenset, dict)) else set(known)  # O(1) lookups
        counts = Counter(s for s in symbols if s not in known)
        return cls(kind, unit, dict(counts.most_common()))  # most_common keeps first-seen order among ties

    @property
    def types(self) -> int:
        """How many distinct unseen symbols."""
        return len(self.counts)

    @property
    def occurrences(self) -> int:
        """How many places (tokens, examples) hold one."""
        return sum(self.counts.values())

    def summary(self) -> str:
        """"3 characters (æ, ø, å) in 12 places", or "no tags"."""
        if not self.counts:
            return f"no {self.kind}s"
        names = [_show(s) if self.kind == "character" else s for s in list(self.counts)[:SHOWN]]
        more = f", and {self.types - SHOWN} more" if self.types > SHOWN else ""
        return (f"{_plural(self.types, self.kind)} ({', '.join(names)}{more}) "
                f"{PREPOSITIONS[self.unit]} {_plural(self.occurrences, self.unit)}")

    def __str__(self) -> str:
        """"unseen in training: 3 characters (æ, ø, å) in 12 places", or "unseen in training: no tags"."""
        return f"unseen in training: {self.summary()}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _show(char: str) -> str:
    """A character as the user can read it: itself, or its escape when it is invisible (a tab, a newline)."""
    return char if char.isprintable() and not char.isspace() else repr(char)
