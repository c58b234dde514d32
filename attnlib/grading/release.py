"""From a master notebook to what a learner gets: the one transformation, for both routes.

The learner notebooks in ``notebooks/`` are made by ``tools/build_notebooks.py``; an
instructor's release is made by ``nbgrader generate_assignment``. Both run the
preprocessors below, so a release equals the learner notebook of the same lesson:

* :class:`StubSolutions`: nbgrader's ``ClearSolutions``, with a stub that names its
  exercise, ``raise NotImplementedError("Exercise 2.1 (softmax): replace this line ...")``,
  so a check can say "your function calls exercise 2.2, which is not written yet";
* :class:`LearnerCells`: check cells get the ``raises-exception`` tag (so "Run all" goes on
  past an unsolved exercise), and the "Open in Colab" badge opens the learner notebook
  instead of the master with its solutions.
"""

from __future__ import annotations

import copy
import re

from nbconvert.preprocessors import ClearOutputPreprocessor
from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.preprocessors import ClearSolutions

BADGE_PATTERN = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)")
GRADE_ID_PATTERN = re.compile(r"^ex(\d+)_(\d+)_(\w+)$")


def exercise_label(grade_id: str) -> str:
    """``ex02_1_softmax`` → ``Exercise 2.1 (softmax)``."""
    match = GRADE_ID_PATTERN.match(grade_id)
    if not match:
        raise ValueError(f"grade_id {grade_id!r} does not follow exLL_N_name (e.g. ex02_1_softmax)")
    lesson, number, name = match.groups()
    return f"Exercise {int(lesson)}.{number} ({name.replace('_', ' ')})"


def stub_source(grade_id: str) -> str:
    """What replaces a solution: a stub that names the exercise it belongs to."""
    return f'# YOUR CODE HERE\nraise NotImplementedError("{exercise_label(grade_id)}: replace this line with your solution")'


class StubSolutions(ClearSolutions):
    """nbgrader's ClearSolutions, with a stub that names the exercise it belongs to."""

    def preprocess_cell(self, cell, resources, index):
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and grading.get("solution"):
            self.code_stub = dict(python=stub_source(grading["grade_id"]))
        return super().preprocess_cell(cell, resources, index)


class LearnerCells(NbGraderPreprocessor):
    """Tag check cells ``raises-exception`` and point the Colab badge at the learner notebook."""

    def preprocess_cell(self, cell, resources, index):
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and grading.get("grade") and not grading.get("solution"):
            tags = cell.metadata.setdefault("tags", [])
            if "raises-exception" not in tags:
                tags.append("raises-exception")
        if cell.cell_type == "markdown" and "/notebooks/solutions/" in cell.source:
            cell.source = BADGE_PATTERN.sub(lambda m: m.group(0).replace("/notebooks/solutions/", "/notebooks/"),
                                            cell.source)
        return cell, resources


def learner_version(master):
    """The learner notebook made from a master notebook (a new notebook; ``master`` is unchanged)."""
    nb = copy.deepcopy(master)
    for preprocessor in (StubSolutions(), LearnerCells(), ClearOutputPreprocessor()):
        nb, _ = preprocessor.preprocess(nb, {})
    return nb
