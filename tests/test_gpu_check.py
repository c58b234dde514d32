"""tools/gpu_check.py (make gpu-check): cells become plain Python, the plan is valid, a CPU dry run works,
and a machine without CUDA gets a clear refusal."""

import json
import sys

import pytest
import torch

from tests.notebook_tools import ROOT, master_paths

sys.path.insert(0, str(ROOT / "tools"))
import gpu_check  # noqa: E402


def test_magics_become_pass_and_keep_the_indentation():
    setup = 'import sys\n\nif "google.colab" in sys.modules:\n    %pip install -q "attnlib @ git+x"\n\nimport torch'
    python = gpu_check.to_python(setup)
    assert '    pass  # IPython magic skipped: pip install -q "attnlib @ git+x"' in python
    compile(python, "setup", "exec")
    assert gpu_check.to_python("!ls\nx = 1") == "pass  # IPython magic skipped: ls\nx = 1"
    assert gpu_check.to_python("%%time\nx = 1") == "x = 1"
    assert gpu_check.to_python("y = 10 % 3") == "y = 10 % 3"  # the modulo operator is not a magic


def test_every_master_notebook_is_found_and_every_cell_compiles():
    found = gpu_check.notebooks()
    assert found == master_paths() and found, "the check must find the masters by glob"
    assert gpu_check.validate_plan(found) == []
    assert [p.name for p in gpu_check.notebooks(["00"])] == ["00_welcome.ipynb"]


def test_a_failing_cell_is_reported_with_its_index(tmp_path):
    notebook = {"cells": [{"cell_type": "markdown", "source": "# x"},
                          {"cell_type": "code", "source": ["x = 1\n", "%matplotlib inline"]},
                          {"cell_type": "code", "source": "assert x == 2, 'x is not 2'"}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "99_broken.ipynb"
    path.write_text(json.dumps(notebook))
    result = gpu_check.run_in_subprocess(path, "cpu", timeout=120)
    assert not result["ok"] and result["cell"] == 2 and "AssertionError: x is not 2" in result["error"]


def test_dry_run_executes_one_lesson_on_the_cpu_and_the_bench(capsys):
    assert gpu_check.main(["--dry-run", "--timeout", "300", "--budget", "600"]) == 0
    out = capsys.readouterr().out
    assert "| 00_welcome.ipynb |" in out and "| ok |" in out.replace(" | ok |", "| ok |")
    assert "kv_cache_speedup" in out and "**all passed**" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_fails_clearly(capsys):
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and "torch.cuda.is_available() is False" in err and "--dry-run" in err


def test_makefile_target_runs_the_script_without_the_setup():
    makefile = (ROOT / "Makefile").read_text()
    assert "\ngpu-check:\n\t$(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)\n" in makefile
