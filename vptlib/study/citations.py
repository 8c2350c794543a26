"""A Sphinx extension (listed in ``_config.yml``): one citation style, author-year.

The pages cite author-year (``bibtex_reference_style: author_year``: "Jia et al., 2022"),
but sphinxcontrib-bibtex labels the References list with the formatting style's labels:
pybtex's ``alpha`` gives "[JTC+22]", which a reader cannot match to the text. This style
(``bibtex_default_style: author_year``) labels each entry as the text cites it and sorts
the list by author and year. Two works of one first author and year get "a", "b".
"""

from __future__ import annotations

from collections import Counter
from typing import Any

STYLE = "author_year"


def label(entry: Any) -> str:
    """ "Jia et al. 2022", "Zanella and Ben Ayed 2024", "Radford 2021": as the text cites it."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    last = [" ".join(p.last_names) for p in people]
    if not last:
        who = entry.fields.get("title", entry.key)
    elif len(last) == 1:
        who = last[0]
    elif len(last) == 2:
        who = f"{last[0]} and {last[1]}"
    else:
        who = f"{last[0]} et al."
    return f"{who} {entry.fields.get('year', 'n.d.')}"


def labels(entries: list[Any]) -> list[str]:
    """Each entry's label, made unique with "a", "b" after the year where two would clash."""
    plain = [label(e) for e in entries]
    total, seen = Counter(plain), Counter()
    out = []
    for text in plain:
        if total[text] > 1:
            out.append(f"{text}{'abcdefghijklmnopqrstuvwxyz'[seen[text]]}")
            seen[text] += 1
        else:
            out.append(text)
    return out


def _register() -> None:
    from pybtex.plugin import register_plugin
    from pybtex.style.formatting.unsrt import Style as UnsrtStyle
    from pybtex.style.labels import BaseLabelStyle
    from pybtex.style.sorting.author_year_title import SortingStyle

    class AuthorYearLabels(BaseLabelStyle):
        def format_labels(self, sorted_entries):
            yield from labels(list(sorted_entries))

    class AuthorYearStyle(UnsrtStyle):
        default_label_style = AuthorYearLabels
        default_sorting_style = SortingStyle

    register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle, force=True)


def setup(app: Any) -> dict[str, Any]:
    _register()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
