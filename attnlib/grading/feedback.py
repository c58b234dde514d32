"""Feedback pages that describe their figures.

nbconvert writes a cell's ``alt`` metadata into its images' alt text, and otherwise warns
that images lack one. :class:`FigureAltText` gives each cell that drew a figure an alt
text made from the titles its code sets, e.g. "Figure: Training loss", so that a
screen reader can say what the picture is.
"""

from __future__ import annotations

import re

from nbgrader.preprocessors import NbGraderPreprocessor

_TITLE = re.compile(r"""(?:set_title|suptitle|title)\(\s*f?(["'])(.+?)\1|title\s*=\s*f?(["'])(.+?)\3""")
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")


def figure_alt_text(source: str) -> str:
    """"Figure: <the titles the cell's code sets>", with f-string fields shown as "…"."""
    titles = []
    for match in _TITLE.finditer(source):
        title = re.sub(r"\{[^}]*\}", "…", match.group(2) or match.group(4)).strip()
        if title and title not in titles:
            titles.append(title)
    return "Figure: " + "; ".join(titles) if titles else "Figure drawn by the code of this cell"


class FigureAltText(NbGraderPreprocessor):
    """Give every cell with an image output an ``alt`` text (used by nbgrader's feedback step)."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and "alt" not in cell.metadata and any(
            kind in output.get("data", {}) for output in cell.get("outputs", []) for kind in _IMAGE_TYPES
        ):
            cell.metadata["alt"] = figure_alt_text(cell.source)
        return cell, resources
