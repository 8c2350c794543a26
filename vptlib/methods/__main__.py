"""``python -m vptlib.methods``: the registry's method names as a Makefile line, so the build
asks the registry instead of keeping a second list.

``python -m vptlib.methods --recipes book/methods.md`` rewrites the Methods page's recipe table
(between its markers) from the recipe cards (:mod:`.cards`); a test keeps the page equal to it.
"""

import sys
from pathlib import Path

from . import METHODS

RECIPES_START, RECIPES_END = "<!-- recipes:start -->", "<!-- recipes:end -->"


def recipes_markdown() -> str:
    from .cards import recipe_table

    return recipe_table({m: s.title for m, s in METHODS.items()})


def render_recipes(page: Path) -> None:
    text = page.read_text()
    head, _, rest = text.partition(RECIPES_START)
    _, _, tail = rest.partition(RECIPES_END)
    page.write_text(f"{head}{RECIPES_START}\n{recipes_markdown()}\n{RECIPES_END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--recipes"]:
        render_recipes(Path(sys.argv[2]))
    else:
        print("METHODS := " + " ".join(METHODS))
