"""The web book (`make site`): one short lesson built offline, its page checked."""

import re
import subprocess
import sys

import pytest

from tests.notebook_tools import ROOT


@pytest.mark.slow
def test_the_book_builds_a_lesson_page_with_figures_folded_solutions_and_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py"), "--lessons", "01",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = tmp_path / "html"
    page = (html / "01_dot_products.html").read_text(encoding="utf-8")
    start = (html / "index.html").read_text(encoding="utf-8")

    assert "Dot products and similarity" in page
    assert len(re.findall(r"<img [^>]*src=\"_images/", page)) >= 3  # the lesson's figures, executed
    assert page.count("Show solution") == 3  # each exercise's solution folded away
    assert "✓ Exercise 1.1" in page  # its check, run on the solution
    assert ".hint()" not in page  # hint cells left out
    assert not re.search(r"Traceback|\w+Error:", page)
    assert 'class="math' in page and "_static/mathjax/tex-chtml.js" in page  # maths, with MathJax on board
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    assert not re.search(r'<(script|link)[^>]*(src|href)="https?://', page)  # nothing fetched when read
    assert 'href="01_dot_products.html"' in start  # the README's lesson table links to the page
