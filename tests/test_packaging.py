"""Packaging: Colab-friendly requirements, and environment.yml in step with pyproject.toml."""

import re
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import yaml

from tests.notebook_tools import ROOT


def pyproject():
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def name_of(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower()


def test_torch_and_numpy_have_lower_bounds_only():
    """Colab's preinstalled torch (2.11 on Python 3.13) and numpy must satisfy the requirements."""
    deps = {name_of(r): r for r in pyproject()["project"]["dependencies"]}
    for name in ("torch", "numpy"):
        assert re.fullmatch(rf"{name}>=[\d.]+", deps[name]), deps[name]
    torch_floor = tuple(int(x) for x in deps["torch"].split(">=")[1].split("."))
    assert torch_floor <= (2, 11), "Colab's torch 2.11 must satisfy the torch requirement"


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert "python=3.11" in env["dependencies"]
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section, "environment.yml must install the course package itself"
    listed = sorted(r for r in pip_section if not r.startswith("-"))
    project = pyproject()["project"]
    expected = sorted(project["dependencies"] + project["optional-dependencies"]["lab"])
    assert listed == expected, "environment.yml's pip section must list pyproject's runtime and lab requirements"


def test_makefile_installs_torch_first_through_a_variable():
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH    ?= torch==2.13.0" in makefile
    install_torch = makefile.index("pip install --quiet $(TORCH)")
    install_course = makefile.index('pip install --quiet -e ".[dev]"')
    assert install_torch < install_course
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_version_is_one_number_everywhere():
    """Notebooks install the release ``v<version>``; attnlib says which one it is."""
    import attnlib

    assert attnlib.__version__ == pyproject()["project"]["version"]
