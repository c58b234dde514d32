"""`make lab` opens a learner's JupyterLab: no nbgrader interface, no news pop-up.

The course's .venv holds nbgrader (``make test`` and ``make notebooks`` need it), so
``make lab`` turns its extensions off with the settings in ``tools/jupyterlab`` (see the
README there). These tests resolve the settings the way Jupyter does, so they fail when an
nbgrader or JupyterLab upgrade adds an extension or renames a setting.
"""

import json
from pathlib import Path

import pytest

from tests.notebook_tools import ROOT

SETTINGS = ROOT / "tools" / "jupyterlab"


def _lab_recipe() -> str:
    makefile = (ROOT / "Makefile").read_text()
    start = makefile.index("\nlab:")
    return makefile[start:].split("\n\n")[0]


def test_make_lab_starts_jupyterlab_with_the_learner_settings():
    makefile = (ROOT / "Makefile").read_text()
    recipe = _lab_recipe()
    assert "LAB_SETTINGS := $(CURDIR)/tools/jupyterlab" in makefile
    assert 'JUPYTER_CONFIG_PATH="$(LAB_SETTINGS)' in recipe
    assert '--LabApp.app_settings_dir="$(LAB_SETTINGS)"' in recipe
    assert "--LabApp.news_url=None" in recipe  # the server never fetches the news feed either
    assert "--notebook-dir=notebooks" in recipe and "$(LAB_ARGS)" in recipe


def _installed_nbgrader_server_extensions() -> set[str]:
    from jupyter_core.paths import jupyter_config_path

    names = set()
    for directory in jupyter_config_path():
        for path in (Path(directory) / "jupyter_server_config.d").glob("*.json"):
            extensions = json.loads(path.read_text()).get("ServerApp", {}).get("jpserver_extensions", {})
            names |= {name for name in extensions if name.split(".")[0] == "nbgrader"}
    return names


def test_nbgrader_server_extensions_are_off_in_make_lab(monkeypatch):
    from jupyter_core.paths import jupyter_config_path
    from jupyter_server.extension.config import ExtensionConfigManager

    installed = _installed_nbgrader_server_extensions()
    if not installed:
        pytest.skip("nbgrader is not installed in this environment")
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(SETTINGS))
    merged = ExtensionConfigManager(read_config_path=jupyter_config_path()).get_jpserver_extensions()
    assert {name: merged.get(name) for name in installed} == {name: False for name in installed}
    assert merged.get("jupyterlab") is True  # the lab itself stays on


def _page_config() -> dict:
    """The page config JupyterLab's server hands the browser: which extensions exist, which are off."""
    from jupyter_core.paths import jupyter_path
    from jupyterlab_server.config import get_page_config

    return get_page_config(jupyter_path("labextensions"), app_settings_dir=str(SETTINGS))


def _disabled(page: dict) -> set[str]:
    disabled = page.get("disabledExtensions", [])
    return {name for name, off in disabled.items() if off} if isinstance(disabled, dict) else set(disabled)


def test_nbgrader_lab_extension_is_off_in_make_lab(monkeypatch):
    monkeypatch.delenv("JUPYTER_CONFIG_PATH", raising=False)
    default = _page_config()
    nbgrader = [ext["name"] for ext in default["federated_extensions"] if "nbgrader" in ext["name"]]
    if not nbgrader:
        pytest.skip("nbgrader's JupyterLab extension is not installed in this environment")
    assert not _disabled(default) & set(nbgrader)  # on unless told
    monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(SETTINGS))
    disabled = _disabled(_page_config())
    assert set(nbgrader) <= disabled
    assert "@jupyter-widgets/jupyterlab-manager" not in disabled  # progress bars stay


def test_jupyterlab_never_asks_about_news_or_updates():
    from jupyterlab.commands import get_app_dir

    overrides = json.loads((SETTINGS / "overrides.json").read_text())
    plugin = "@jupyterlab/apputils-extension:notification"
    assert overrides == {plugin: {"fetchNews": "false", "checkForUpdates": False}}
    schema_path = Path(get_app_dir()) / "schemas" / "@jupyterlab" / "apputils-extension" / "notification.json"
    properties = json.loads(schema_path.read_text())["properties"]
    assert "false" in [choice["const"] for choice in properties["fetchNews"]["oneOf"]]  # "Never"
    assert properties["fetchNews"]["default"] == "none"  # JupyterLab's own default asks: hence the override
    assert properties["checkForUpdates"]["type"] == "boolean"
