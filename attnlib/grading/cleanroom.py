"""Grading in a clean room: the verdict of a check never comes from the learner's own kernel.

A learner's notebook runs in a kernel the learner controls. One line in any cell can
replace the checker (``Exercise.check = ...``), ``torch.testing.assert_close``, ``print``,
``AssertionError``, or even IPython's error display, and nbgrader, which grades a check
cell by whether its output shows an error, would then give full points. No check can
defend itself from inside that kernel.

So at autograde time :class:`CleanRoomChecks` runs every graded check again, in a fresh
kernel started in an empty folder, from a notebook made of:

1. a fixed prelude: the setup cell's imports (torch, numpy, matplotlib, attnlib, math,
   ``F``, ``nn``) and the lesson's checker modules;
2. the **definitions only** of the learner's solution cells (:func:`definitions_only`):
   imports, functions, classes and constant assignments; every other top-level statement,
   which is where a patch would go, is dropped, and so are decorators and default values
   that could run code while a function is being defined;
3. the locked check cells, as nbgrader restored them.

The clean room's outputs replace the graded cells' outputs, so nbgrader's grade is the
clean room's. Where the two verdicts differ, the output says so. Lines elsewhere in the
notebook that look like tampering are listed for the instructor (:func:`suspicious_lines`).
What this cannot prevent is written in the README (section "For instructors").
"""

from __future__ import annotations

import ast
import hashlib
import base64
import importlib.metadata
import os
import re
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Integer

PRELUDE = """\
import math

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import attnlib

attnlib.seed_everything(0)
"""

_CHECKER_MODULE = re.compile(r"\b(lesson\d\d)\.\w+\.check\(")
_HINT_CELL = re.compile(r"^\s*lesson\d\d\.\w+\.hint\(\)\s*$")
_ALLOWED_DECORATORS = {"staticmethod", "classmethod", "property", "torch.no_grad", "torch.inference_mode",
                       "dataclass", "dataclasses.dataclass", "torch.no_grad()", "torch.inference_mode()"}
_SUSPICIOUS = re.compile(
    r"attnlib\.exercises|_core|\bExercise\b|\bTrial\b|\.check\s*=|setattr|__import__|builtins|sys\.modules"
    r"|get_ipython|showtraceback|\bexec\s*\(|\beval\s*\(|\bglobals\s*\(|assert_close\s*=|AssertionError\s*="
    r"|\bprint\s*=|sys\.stdout\s*=|sys\.stderr\s*=|site-packages|input_transformers|run_cell"
)


# ----- what the clean room keeps of a solution cell ---------------------------------------
def definitions_only(source: str) -> tuple[str, list[str]]:
    """The definitions of a solution cell, and a description of each statement dropped.

    Kept: imports; ``def`` and ``class`` statements (decorators other than a few harmless
    ones, default values and bases that could call code, and annotations removed or
    refused); assignments of constants to names. Dropped: everything else at the top level.
    A cell that does not parse is kept as it is, so that its SyntaxError shows.
    """
    python = _without_ipython_syntax(source)
    try:
        tree = ast.parse(python)
    except SyntaxError:
        return source, []
    kept, dropped = [], []
    for node in tree.body:
        clean = _clean_statement(node)
        if clean is None:
            dropped.append(f"line {node.lineno}: {ast.get_source_segment(python, node) or type(node).__name__}"[:120])
        else:
            kept.append(clean)
    return ast.unparse(ast.Module(body=kept, type_ignores=[])), dropped


def _without_ipython_syntax(source: str) -> str:
    """Turn ``%magic`` and ``!shell`` lines into plain Python calls (which are then dropped)."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - the grading environment always has IPython
        return source
    return TransformerManager().transform_cell(source)


def _clean_statement(node: ast.stmt) -> ast.stmt | None:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return node
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _clean_function(node)
    if isinstance(node, ast.ClassDef):
        return _clean_class(node)
    if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) for t in node.targets) and _static(node.value):
        return node
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):  # a docstring
        return node
    return None


def _clean_function(node):
    arguments = node.args
    defaults = list(arguments.defaults) + [d for d in arguments.kw_defaults if d is not None]
    if not all(_static(d) for d in defaults):
        return None  # a default value that calls code would run while the function is defined
    for arg in arguments.posonlyargs + arguments.args + arguments.kwonlyargs:
        arg.annotation = None
    for arg in (arguments.vararg, arguments.kwarg):
        if arg is not None:
            arg.annotation = None
    node.returns = None
    node.decorator_list = [d for d in node.decorator_list if ast.unparse(d) in _ALLOWED_DECORATORS]
    return node


def _clean_class(node):
    if node.keywords or not all(_static(base) for base in node.bases):
        return None  # a metaclass or a computed base would run code
    node.decorator_list = [d for d in node.decorator_list if ast.unparse(d) in _ALLOWED_DECORATORS]
    body = []
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            item = _clean_function(item)
        elif isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and \
                (item.value is None or _static(item.value)):
            item.annotation = ast.Name("object", ast.Load())
        elif not (isinstance(item, ast.Expr) and isinstance(item.value, ast.Constant)) and \
                not (isinstance(item, ast.Assign) and _static(item.value)) and not isinstance(item, ast.Pass):
            item = None
        if item is not None:
            body.append(item)
    node.body = body or [ast.Pass()]
    return node


def _static(node) -> bool:
    """An expression that only reads names, attributes and constants: evaluating it calls no code."""
    if isinstance(node, (ast.Constant, ast.Name)):
        return True
    if isinstance(node, ast.Attribute):
        return _static(node.value) and not node.attr.startswith("__")
    if isinstance(node, ast.UnaryOp):
        return _static(node.operand)
    if isinstance(node, ast.BinOp):
        return _static(node.left) and _static(node.right)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_static(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is None or _static(k) for k in node.keys) and all(_static(v) for v in node.values)
    return False


def suspicious_lines(nb) -> list[str]:
    """Lines of the learner's code cells that touch the grading machinery: for a human to read."""
    found = []
    for index, cell in enumerate(nb.cells):
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or grading.get("locked"):
            continue
        for line in cell.source.splitlines():
            if _SUSPICIOUS.search(line):
                found.append(f"cell {index}: {line.strip()[:100]}")
    return found


# ----- the clean notebook and its run --------------------------------------------------------
def graded_cells(nb) -> list:
    """The check cells nbgrader grades (locked code cells with points)."""
    return [c for c in nb.cells if c.cell_type == "code" and c.metadata.get("nbgrader", {}).get("grade")
            and not c.metadata.get("nbgrader", {}).get("solution")]


def clean_notebook(nb):
    """The notebook the clean room runs: prelude, solution definitions, graded checks (in order)."""
    modules = sorted({m for c in graded_cells(nb) for m in _CHECKER_MODULE.findall(c.source)})
    prelude = PRELUDE + "".join(f"from attnlib.exercises import {m}\n" for m in modules)
    cells = [nbformat.v4.new_code_cell(prelude)]
    for cell in nb.cells:
        grading = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        if grading.get("solution"):
            cells.append(nbformat.v4.new_code_cell(definitions_only(cell.source)[0]))
        elif grading.get("grade"):
            clean = nbformat.v4.new_code_cell(cell.source)
            clean.metadata["grade_id"] = grading["grade_id"]
            cells.append(clean)
    clean_nb = nbformat.v4.new_notebook(cells=cells)
    clean_nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    return clean_nb


def run_clean(nb, timeout: int = 300):
    """Run :func:`clean_notebook` of ``nb`` in a fresh kernel, in an empty folder, on the CPU."""
    clean_nb = clean_notebook(nb)
    saved = {k: os.environ.get(k) for k in ("ATTNLIB_DEVICE", "MPLBACKEND", "OMP_NUM_THREADS")}
    os.environ.update(ATTNLIB_DEVICE="cpu", MPLBACKEND="Agg", OMP_NUM_THREADS="1")
    try:
        with tempfile.TemporaryDirectory(prefix="attnlib-cleanroom-") as empty:  # no learner files importable
            NotebookClient(clean_nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                           resources={"metadata": {"path": empty}}).execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return {c.metadata["grade_id"]: c.outputs for c in clean_nb.cells if "grade_id" in c.metadata}


def _failed(outputs) -> bool:
    return any(o.output_type == "error" or (o.output_type == "stream" and o.name == "stderr") for o in outputs)


class CleanRoomChecks(NbGraderPreprocessor):
    """nbgrader autograde step (after ``Execute``): graded cells get the clean room's verdict.

    Also empties the outputs of hint cells (a hint is help, not part of a graded answer)
    and names, in the first graded cell's output, any line of the learner's code that
    reaches into the grading machinery.
    """

    timeout = Integer(300, help="seconds the clean room may take for one notebook").tag(config=True)

    def preprocess(self, nb, resources):
        problems = modified_installation()
        if problems:
            raise RuntimeError("attnlib's installed files differ from the released package, so checks "
                               f"cannot be trusted; reinstall attnlib before grading: {', '.join(problems[:5])}")
        graded = graded_cells(nb)
        if graded:
            verdicts = run_clean(nb, self.timeout)
            for cell in graded:
                self._replace_outputs(cell, verdicts.get(cell.metadata.nbgrader.grade_id, []))
            flagged = suspicious_lines(nb)
            if flagged:
                note = ("⚠ For the instructor: these lines of the notebook reach into the grading machinery "
                        "(grades above come from a clean re-run that ignores them):\n  " + "\n  ".join(flagged))
                graded[0].outputs.append(nbformat.v4.new_output("stream", name="stdout", text=note + "\n"))
        for cell in nb.cells:
            if cell.cell_type == "code" and _HINT_CELL.match(cell.source):
                cell.outputs = []
        return nb, resources

    @staticmethod
    def _replace_outputs(cell, clean_outputs) -> None:
        in_kernel_failed, clean_failed = _failed(cell.outputs), _failed(clean_outputs)
        cell.outputs = list(clean_outputs)
        if clean_failed and not in_kernel_failed:
            cell.outputs.insert(0, nbformat.v4.new_output("stream", name="stdout", text=(
                "This check passed in the submitted notebook but fails when run again in a fresh kernel "
                "from the solution cells' definitions alone; that verdict counts:\n")))
        elif in_kernel_failed and not clean_failed:
            cell.outputs.append(nbformat.v4.new_output("stream", name="stdout", text=(
                "(It failed in the submitted notebook, but passes when run again in a fresh kernel from "
                "the solution cells' definitions alone; that verdict counts.)\n")))


# ----- is attnlib itself the released one? ----------------------------------------------------
def modified_installation() -> list[str]:
    """Files of the installed attnlib whose content differs from the hashes pip recorded.

    A learner's notebook, run by the grader, could rewrite the installed checkers on disk
    for every notebook graded after it. pip's RECORD lists a sha256 for each installed
    file; an editable (development) install has none, and is not checked.
    """
    try:
        files = importlib.metadata.distribution("attnlib").files or []
    except importlib.metadata.PackageNotFoundError:
        return []
    changed = []
    for file in files:
        if file.hash is None or file.hash.mode != "sha256" or not str(file).endswith(".py"):
            continue
        path = Path(file.locate())
        digest = base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()
        if digest != file.hash.value:
            changed.append(str(file))
    return changed
