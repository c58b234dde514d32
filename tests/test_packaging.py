"""Packaging: Colab-friendly requirements, and environment.yml in step with pyproject.toml."""

import os
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


# ----- honest version bounds -------------------------------------------------------------------
# Every torch API the course uses that not every torch has: a pattern that finds it in attnlib's
# source or in a notebook's code, the first torch version that has it, and why. The declared
# floor must cover them all. Add a row when the code starts using another such API.
VERSION_GATED = [
    (r"torch\.autocast\(", (2, 5), 'torch.autocast("mps") raises "unsupported autocast device_type" before 2.5'),
    (r"torch\.amp\.GradScaler\(", (2, 3), "torch.amp.GradScaler(device) arrived in 2.3"),
    (r"is_autocast_enabled\(", (2, 4), "torch.is_autocast_enabled(device_type) takes a device from 2.4"),
    (r"nn\.LayerNorm\([^)]*bias=", (2, 1), "nn.LayerNorm(bias=...) arrived in 2.1"),
    (r"scaled_dot_product_attention\([^)]*scale=", (2, 1), "scaled_dot_product_attention(scale=...) arrived in 2.1"),
    (r"enable_gqa", (2, 5), "scaled_dot_product_attention(enable_gqa=...) arrived in 2.5"),
    (r"sdpa_kernel", (2, 3), "torch.nn.attention.sdpa_kernel arrived in 2.3"),
    (r"nn\.RMSNorm|F\.rms_norm", (2, 4), "nn.RMSNorm arrived in 2.4"),
    (r"fully_shard", (2, 5), "torch.distributed.fsdp.fully_shard became public in 2.5 (2.6 documents it)"),
    (r"register_post_accumulate_grad_hook", (2, 1), "Tensor.register_post_accumulate_grad_hook arrived in 2.1"),
    (r"torch\.compile\(", (2, 0), "torch.compile arrived in 2.0"),
    (r"weights_only=", (1, 13), "torch.load(weights_only=...) arrived in 1.13"),
    (r"import numpy|np\.", (2, 3), "NumPy 2 (which a fresh install picks) works with torch >= 2.3"),
]


def _course_code() -> str:
    """attnlib's source and every master notebook's code cells, as one text to search."""
    import json

    texts = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "attnlib").rglob("*.py"))]
    for path in sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(texts)


def _floor(requirement: str) -> tuple[int, ...]:
    return tuple(int(x) for x in requirement.split(">=")[1].split("."))


def test_torch_floor_covers_every_version_gated_api_the_code_uses():
    deps = {name_of(r): r for r in pyproject()["project"]["dependencies"]}
    floor = _floor(deps["torch"])
    code = _course_code()
    used = [(pattern, needs, why) for pattern, needs, why in VERSION_GATED if re.search(pattern, code)]
    assert used, "the scan found nothing: is it reading the code?"
    too_new = [why for _, needs, why in used if needs > floor]
    assert not too_new, f"torch>={'.'.join(map(str, floor))} is too low: {too_new}"
    assert floor == max(needs for _, needs, _ in used), (
        f"torch>={'.'.join(map(str, floor))} asks for more than the code needs ({max(n for _, n, _ in used)}); "
        "say why in pyproject.toml and add the API to VERSION_GATED")


# What Colab gives a notebook (recorded 2026-12: Python 3.13, torch 2.11, numpy 2.1). Installing
# attnlib there must replace none of it, so every runtime requirement must accept these versions.
COLAB = {"python": "3.13", "torch": "2.11.0", "numpy": "2.1.0", "matplotlib": "3.10.0", "tqdm": "4.67.1"}


def test_colab_versions_satisfy_every_runtime_requirement():
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    project = pyproject()["project"]
    assert SpecifierSet(project["requires-python"]).contains(COLAB["python"])
    for text in project["dependencies"]:
        requirement = Requirement(text)
        assert requirement.name in COLAB, f"record Colab's version of {requirement.name} in COLAB"
        assert requirement.specifier.contains(COLAB[requirement.name]), (text, COLAB[requirement.name])


def test_binder_environment_is_cpu_only_and_in_step_with_pyproject():
    env = yaml.safe_load((ROOT / "binder" / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    listed = {name_of(d): d for d in env["dependencies"] if isinstance(d, str)}
    assert "pytorch-cpu" in listed and "torch" not in listed and "pytorch" not in listed, "Binder has no GPU"
    project = pyproject()["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["lab"]:
        conda_name = {"torch": "pytorch-cpu"}.get(name_of(requirement), name_of(requirement))
        expected = requirement.replace(name_of(requirement), conda_name, 1)
        assert listed.get(conda_name) == expected, f"binder/environment.yml should list {expected!r}"
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build  # attnlib itself, replacing nothing conda installed
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)
