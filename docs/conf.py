"""Sphinx configuration of the course's web book (`make site`, see tools/build_site.py).

The book shows the master notebooks executed: every figure, table and printed result,
each exercise's solution folded away behind a "Show solution" button. Notebooks run once
and are cached (jupyter-cache), so a second build re-executes only the lessons that
changed. Nothing is fetched from the network at build time: MathJax comes from
sphinx-mathjax-offline, the theme's assets from its package.
"""

import os

project = "Attention, from dot products to Transformers"
author = "The course's authors"
copyright = "the course's authors; code MIT"

extensions = ["myst_nb", "sphinx-mathjax-offline"]  # MathJax copied into the book: no CDN
myst_enable_extensions = ["dollarmath", "amsmath"]  # $...$ and $$...$$, as in Jupyter
myst_heading_anchors = 3  # README links such as #without-make-windows-or-anywhere
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
root_doc = "index"

# Execution: cached, in a temporary folder, every lesson with the course's site kernel
# (tools/build_site.py writes it: progress bars as text, so their final state is shown).
nb_execution_mode = "cache"
nb_execution_cache_path = os.environ.get("ATTNLIB_SITE_CACHE", "../.jupyter_cache")
nb_execution_timeout = 900  # seconds per cell
nb_execution_in_temp = True
nb_execution_raise_on_error = True  # a lesson that fails stops the build
nb_execution_show_tb = True
nb_merge_streams = True  # one block per stream, carriage returns applied: a progress bar's last state
nb_code_prompt_show = "Show solution"  # only solution cells are folded (tag hide-input)
nb_code_prompt_hide = "Hide solution"

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {
    "show_toc_level": 2,
    "use_download_button": True,
    "home_page_in_toc": True,
}
suppress_warnings = ["mystnb.unknown_mime_type"]
