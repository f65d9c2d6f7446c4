"""Debian version strings: ordering (``dpkg --compare-versions``) and dependency relations.

The ordering is dpkg's (Debian Policy 5.6.12): epoch, then upstream version and
revision compared part by part, non-digits before digits, ``~`` before everything
(even the end of the string), letters before other characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cmp_to_key

__all__ = ["compare_versions", "version_key", "Relation", "parse_relations", "satisfies"]


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's ``verrevcmp``: alternate runs of non-digits (by ``_order``) and numbers."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) else 0
            bc = _order(b[j]) if j < len(b) else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split(v: str) -> tuple[int, str, str]:
    epoch, sep, rest = v.partition(":")
    if not sep:
        epoch, rest = "0", v
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    return int(epoch or 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """Negative, zero or positive as ``a`` is older than, equal to or newer than ``b``.

    >>> compare_versions("1.0~rc1", "1.0") < 0
    True
    """
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return ea - eb
    return _compare_part(ua, ub) or _compare_part(ra, rb)


#: a sort key for versions (``sorted(vs, key=version_key)``: oldest first)
version_key = cmp_to_key(compare_versions)


@dataclass(frozen=True)
class Relation:
    """One alternative of a dependency: ``name[:arch] [(op version)]``."""

    name: str
    op: str = ""  # << <= = >= >> or "" (any version)
    version: str = ""

    def __str__(self) -> str:
        return f"{self.name} ({self.op} {self.version})" if self.op else self.name


_REL = re.compile(r"^\s*([a-z0-9][a-z0-9+.-]*)(?::[a-z0-9-]+)?\s*(?:\(\s*(<<|<=|=|>=|>>|<|>)\s*([^)\s]+)\s*\))?\s*(?:\[[^]]*\])?\s*(?:<[^>]*>\s*)*$")


def parse_relations(text: str) -> list[list[Relation]]:
    """``Depends``' value as clauses of alternatives: ``a (>= 1) | b, c`` → ``[[a>=1, b], [c]]``.

    Raises ValueError for a relation it cannot read (the caller names the package).
    """
    out: list[list[Relation]] = []
    for clause in text.split(","):
        if not clause.strip():
            continue
        alts = []
        for alt in clause.split("|"):
            m = _REL.match(alt)
            if not m:
                raise ValueError(f"cannot read the relation {alt.strip()!r}")
            op = {"<": "<=", ">": ">="}.get(m.group(2) or "", m.group(2) or "")  # obsolete forms, as dpkg reads them
            alts.append(Relation(m.group(1), op, m.group(3) or ""))
        out.append(alts)
    return out


def satisfies(version: str, rel: Relation) -> bool:
    """Whether ``version`` meets ``rel``'s version constraint (any version when it has none)."""
    if not rel.op:
        return True
    c = compare_versions(version, rel.version)
    return {"<<": c < 0, "<=": c <= 0, "=": c == 0, ">=": c >= 0, ">>": c > 0}[rel.op]
