"""Claims that cannot go stale: a number or verdict quoted in a notebook's prose is checked by the cell
beside it.

    expect(mu_gain, between=(0.0, 0.05), claim="TV keeps model utility within 0.05 of the target")
    expect(verdict, equals="cannot tell at this size", claim="PerTA improves on TV: cannot tell")

On the profiles the prose was written from (``cpu`` by default) a value outside the stated range is a
stale claim: the sentence no longer says what the run shows. What happens then depends on who runs it
(``PALU_PERTA_CLAIMS``):

- ``warn`` (the default: a student or lecturer running a notebook on their own machine, where another CPU,
  thread count or library version moves the last digits of a fine-tune): a :class:`StaleClaimWarning` under
  the cell names the sentence, the value measured and the range stated, and the notebook runs on;
- ``strict`` (the maintainers regenerating the committed notebooks): :class:`StaleClaim` is raised, so the
  run stops at the first sentence to rewrite instead of committing wrong text.

A committed notebook whose outputs hold a stale-claim warning fails the tests (``tests/test_notebooks.py``).
A notebook ends each block of checks with :func:`summarize_checks`, which says how many sentences were checked since the
last report and how many of them this run does not support, so its last line is true in warn mode too.
On the other profiles (``smoke``: a random tiny model whose numbers mean nothing) the value is only checked
to be a finite number or a string, so the cell still runs.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

CHECKED_PROFILES = ("cpu",)  # the profile the notebooks' prose is written from
MODES = ("warn", "strict")  # PALU_PERTA_CLAIMS: what a stale claim does (see the module docstring)


class StaleClaim(AssertionError):
    """A sentence of the prose that the current numbers no longer support."""


class StaleClaimWarning(UserWarning):
    """A sentence of the prose that this run's numbers do not support (``PALU_PERTA_CLAIMS=warn``)."""


# the checks made in this process since the last summarize_checks(): how many were checked, the claims that were stale
_since_report: dict[str, Any] = {"checked": 0, "stale": []}


def claims_mode() -> str:
    """``$PALU_PERTA_CLAIMS`` (default ``warn``); ValueError naming the choices for anything else."""
    mode = os.environ.get("PALU_PERTA_CLAIMS", "warn").strip().lower() or "warn"
    if mode not in MODES:
        raise ValueError(f"PALU_PERTA_CLAIMS={mode!r}: use one of {MODES}")
    return mode


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
    _since_report["checked"] += 1
    if between is not None and not low <= value <= high:
        problem = f"measured {_shown(value)}, outside the stated [{_shown(low)}, {_shown(high)}]"
    elif equals is not None and value != equals:
        problem = f"measured {_shown(value)}, not the stated {_shown(equals)}"
    elif one_of is not None and value not in one_of:
        problem = f"measured {_shown(value)}, not one of the stated {list(one_of)}"
    else:
        return value
    _since_report["stale"].append(claim)
    if claims_mode() == "strict":
        raise StaleClaim(f"The prose says {claim!r}, but on the {name} profile it {problem}: rewrite that sentence "
                         "(and this check) from the new output.")
    warnings.warn(StaleClaimWarning(
        f"The prose says {claim!r}, but this run {problem}. The text was written from the committed run; another "
        "CPU, thread count or library version moves the numbers of a fine-tune, so read the output above, not "
        "the sentence. (Maintainers: rerun with PALU_PERTA_CLAIMS=strict and rewrite it.)"), stacklevel=2)
    return value


def summarize_checks(profile: str | None = None) -> None:
    """Print one line on the claims checked since the last report: that they all match this run, or how many
    do not (their warnings are above it), or that this profile checks none. Resets the count. (It returns
    nothing, so a notebook cell that ends with it shows the line once.)"""
    checked, stale = _since_report["checked"], list(_since_report["stale"])
    _since_report.update(checked=0, stale=[])
    if not checked:
        line = (f"no sentence checked on the {_profile(profile)} profile (the prose quotes the cpu profile's numbers; "
                "these are only checked to be numbers)")
    elif not stale:
        line = f"the sentences above match these results ({checked} checked)"
    else:
        line = (f"{len(stale)} of the {checked} sentences checked above do not match this run (the warnings name "
                "them): read the outputs, not those sentences")
    print(line)
