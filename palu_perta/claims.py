"""Claims that cannot go stale: a number or verdict quoted in a notebook's prose is checked by the cell
beside it.

    expect(mu_gain, between=(0.0, 0.05), claim="TV keeps model utility within 0.05 of the target")
    expect(verdict, equals="cannot tell at this size", claim="PerTA improves on TV: cannot tell")

On the profiles the prose was written from (``cpu`` by default) a value outside the stated range raises
:class:`StaleClaim` with the sentence to rewrite, so a rerun that moves a number fails instead of
leaving wrong text. On the other profiles (``smoke``: a random tiny model whose numbers mean nothing)
the value is only checked to be a finite number or a string, so the cell still runs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

CHECKED_PROFILES = ("cpu",)  # the profile the notebooks' prose is written from


class StaleClaim(AssertionError):
    """A sentence of the prose that the current numbers no longer support."""


def _profile(profile: str | None) -> str:
    return profile or os.environ.get("PALU_PERTA_PROFILE", "cpu")


def _shown(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def expect(value: Any, *, claim: str, between: tuple[float, float] | None = None, equals: Any = None,
           one_of: Sequence[Any] | None = None, profile: str | None = None,
           checked_on: Sequence[str] = CHECKED_PROFILES) -> Any:
    """Check ``value`` against what the sentence ``claim`` states; returns ``value``.

    Exactly one of ``between=(low, high)`` (inclusive; a number), ``equals`` (a verdict, a count) or
    ``one_of`` states the claim. ``profile`` (default ``$PALU_PERTA_PROFILE``, else ``cpu``) decides
    whether the claim is checked: on ``checked_on`` a value outside raises :class:`StaleClaim` naming
    the sentence, the value and the range; elsewhere only the value's type is checked."""
    stated = [x is not None for x in (between, equals, one_of)]
    if sum(stated) != 1:
        raise ValueError("expect() needs exactly one of between=(low, high), equals=... or one_of=[...]")
    if not claim or not isinstance(claim, str):
        raise ValueError("expect() needs claim='the sentence of the prose this number supports'")
    if between is not None:
        low, high = between
        if low > high:
            raise ValueError(f"between=({low}, {high}): the low end is above the high end")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StaleClaim(f"{claim!r} quotes a number, but the cell computed {value!r}")
    name = _profile(profile)
    if name not in checked_on:
        return value
    if between is not None and not low <= value <= high:
        problem = f"measured {_shown(value)}, outside the stated [{_shown(low)}, {_shown(high)}]"
    elif equals is not None and value != equals:
        problem = f"measured {_shown(value)}, not the stated {_shown(equals)}"
    elif one_of is not None and value not in one_of:
        problem = f"measured {_shown(value)}, not one of the stated {list(one_of)}"
    else:
        return value
    raise StaleClaim(f"The prose says {claim!r}, but on the {name} profile it {problem}: rewrite that sentence "
                     "(and this check) from the new output.")
