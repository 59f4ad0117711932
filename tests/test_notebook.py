"""helpers.notebook.load_defs: only imports, defs, classes and ALL_CAPS assignments run."""

from __future__ import annotations

import json

import pytest

from helpers.notebook import load_defs


def write_notebook(path, *sources):
    cells = [{"cell_type": "code", "metadata": {}, "source": s, "outputs": [], "execution_count": None}
             for s in sources]
    cells.insert(1, {"cell_type": "markdown", "metadata": {}, "source": "def not_code(): pass"})
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_runs_definitions_and_skips_everything_else(tmp_path):
    path = write_notebook(
        tmp_path / "demo.ipynb",
        "import math\nSIZE = 3\nside_effect = print('trained!')\n%matplotlib inline",
        "import functools\n\n@functools.lru_cache\ndef area(r):\n    return math.pi * r * r\n\nraise SystemExit",
        "class Net:\n    WIDTH = SIZE * 2\n\nresult = area(2)\nLATE = result + 1",
    )
    nb = load_defs(path)
    assert nb.area(1) == pytest.approx(3.141592653589793) and nb.area.cache_info  # decorator kept
    assert nb.Net.WIDTH == 6 and nb.SIZE == 3
    assert not hasattr(nb, "side_effect") and not hasattr(nb, "result") and not hasattr(nb, "not_code")
    assert nb.__skipped__ == ["LATE"]  # needs a value computed by a skipped statement


def test_errors_name_the_notebook(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebook"):
        load_defs("99_no_such_notebook")
    with pytest.raises(SyntaxError, match="code cell 0"):
        load_defs(write_notebook(tmp_path / "bad.ipynb", "def broken(:\n    pass"))
    with pytest.raises(ZeroDivisionError):
        load_defs(write_notebook(tmp_path / "raises.ipynb", "X = 1 / 0"))
