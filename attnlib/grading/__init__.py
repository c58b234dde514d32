"""Grading with nbgrader: releases equal to the learner notebooks, and checks graded in a clean room.

An instructor's ``nbgrader_config.py`` needs two lines (README, "For instructors")::

    from attnlib.grading import configure
    configure(c)

:func:`configure` sets three of nbgrader's steps:

* ``generate_assignment`` makes exactly the learner notebooks of ``notebooks/``
  (:mod:`attnlib.grading.release`: friendly stubs, ``raises-exception`` check cells,
  the learner's Colab badge);
* ``autograde`` re-runs every graded check in a fresh kernel from the solution cells'
  definitions alone, and grades that (:mod:`attnlib.grading.cleanroom`); hint output is
  left out of graded notebooks;
* ``generate_feedback`` gives figures alt text (:mod:`attnlib.grading.feedback`).

This subpackage needs nbgrader (``pip install "attnlib[grading]"``); the rest of attnlib does not.
"""

from __future__ import annotations


def configure(c) -> None:
    """Point an nbgrader config ``c`` (from ``get_config()``) at attnlib's release, grading and feedback steps."""
    from nbgrader.preprocessors import (
        AssignLatePenalties, CheckCellMetadata, ClearHiddenTests, ClearMarkScheme, ClearOutput,
        ComputeChecksums, Execute, GetGrades, IgnorePattern, IncludeHeaderFooter, InstantiateTests, LimitOutput,
        LockCells, SaveAutoGrades, SaveCells,
    )
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor

    from .cleanroom import CleanRoomChecks
    from .feedback import FigureAltText
    from .release import LearnerCells, StubSolutions

    # nbgrader's own lists (nbgrader 0.9), with ClearSolutions replaced and our steps added.
    c.GenerateAssignment.preprocessors = [
        IncludeHeaderFooter, InstantiateTests, LockCells, StubSolutions, LearnerCells, ClearOutput,
        CheckCellMetadata, ComputeChecksums, SaveCells, ClearHiddenTests, ClearMarkScheme, ComputeChecksums,
        CheckCellMetadata,
    ]
    c.Autograde.autograde_preprocessors = [
        Execute, CleanRoomChecks, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata,
    ]
    c.GenerateFeedback.preprocessors = [GetGrades, FigureAltText, CSSHTMLHeaderPreprocessor]
    if "timeout" not in c.Execute:  # nbgrader's default, 30 s per cell, is shorter than a training cell
        c.Execute.timeout = 300
