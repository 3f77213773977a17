"""Generated blocks in the repository's markdown pages (README, docs/): the text between two marker lines,
rewritten by the module that owns it (verdicts, the results table, the teaching guide) and checked by its test.
"""

from __future__ import annotations


def splice_block(text: str, start: str, end: str, block: str, *, where: str) -> str:
    """``text`` with everything from the marker line ``start`` through the first ``end`` after it replaced by
    ``block`` (which carries its own marker lines). ``where`` names the page and block in the error raised when a
    marker is missing, e.g. ``"the README's verdict block for study 'cpu'"``."""
    if start not in text:
        raise ValueError(f"no {where}: the page lacks its start line {start!r}")
    head, rest = text.split(start, 1)
    if end not in rest:
        raise ValueError(f"{where} has no end line {end!r}")
    return head + block + rest.split(end, 1)[1]
