"""Griffe extension for the API reference: render prefrl's reST-flavoured docstrings as Markdown.

prefrl's docstrings use Sphinx field lists (``:param x:``, parsed by mkdocstrings' ``sphinx`` style) and a
few reST constructs that Markdown would show literally. Before a docstring is parsed this rewrites:

* cross-reference roles ``:class:`~a.b.C``` / ``:func:`f``` ... into code spans (``C``, ``f``), since the
  targets are not all in the reference;
* a paragraph ending in ``::`` (reST's "literal block follows") into one ending in ``:``; the indented
  block after it is already a Markdown code block;
* a reST simple table (rows between ``=====  ====`` rules) into a Markdown pipe table.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const):`(~?)([^`]+)`")
_LITERAL_MARKER = re.compile(r"(\S)::$", flags=re.MULTILINE)
_RULE = re.compile(r"^=+( +=+)+$")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


def _columns(rule: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character span of each column of a simple-table rule line."""
    return [m.span() for m in re.finditer(r"=+", rule)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    # the last column runs to the end of the line (its text may be wider than the rule)
    bounds = [start for start, _ in spans] + [max(len(line), spans[-1][1])]
    return [line[bounds[k] : bounds[k + 1]].strip() for k in range(len(spans))]


def simple_tables(text: str) -> str:
    """Rewrite reST simple tables (a rule, a header row, a rule, rows, a rule) as Markdown pipe tables."""
    lines = text.split("\n")
    out: list[str] = []
    k = 0
    while k < len(lines):
        rules = [j for j in range(k, len(lines)) if _RULE.match(lines[j])][:3]
        if len(rules) < 3 or rules[0] != k or rules[1] != k + 2:
            out.append(lines[k])
            k += 1
            continue
        spans = _columns(lines[k])
        rows = [_cells(line, spans) for line in [lines[k + 1], *lines[k + 3 : rules[2]]] if line.strip()]
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(spans))
        # Python-Markdown keeps pipes inside code spans in a cell, so cells need no escaping
        out.extend("| " + " | ".join(row) + " |" for row in rows[1:])
        k = rules[2] + 1
    return "\n".join(out)


def to_markdown(text: str) -> str:
    """The docstring ``text`` with roles as code spans, ``::`` markers as ``:`` and pipe tables."""
    return simple_tables(_LITERAL_MARKER.sub(r"\1:", _ROLE.sub(_role, text)))


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring as soon as its object is loaded (before mkdocstrings parses it)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = to_markdown(obj.docstring.value)
