"""The student edition and the grader (scripts/exercises.py) on small notebooks and on notebook 01."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "exercises.py"
spec = importlib.util.spec_from_file_location("exercises", SCRIPT)
ex = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ex)

SOLUTION = {"grade": False, "grade_id": "t-square", "locked": False, "schema_version": 3, "solution": True,
            "task": False}


def check_meta(grade_id: str) -> dict:
    return {"grade": True, "grade_id": grade_id, "locked": True, "points": 1, "schema_version": 3,
            "solution": False, "task": False}


def code(src: str, nbgrader: dict | None = None) -> dict:
    meta = {"nbgrader": nbgrader} if nbgrader else {}
    return {"cell_type": "code", "metadata": meta, "source": src, "outputs": [], "execution_count": None}


def notebook(cells: list[dict]) -> dict:
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def write(tmp_path: Path, nb: dict, name: str = "any name.ipynb") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(nb))
    return path


def run_grade(path: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "grade", str(path)], capture_output=True, text=True,
                          env={**os.environ, "HELPERS_DATA_SOURCE": "offline", **env}, timeout=600)


SQUARE = "def square(x):\n    \"\"\"x: a number.\"\"\"\n    ### BEGIN SOLUTION\n    y = x * x\n    return y\n    ### END SOLUTION\n"


def test_stub_keeps_signature_and_indentation():
    out = ex.stub_regions(SQUARE, ex.CODE_STUB)
    assert out == 'def square(x):\n    """x: a number."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n'
    compile(out, "stub", "exec")


@pytest.mark.parametrize("bad", ["### BEGIN SOLUTION\nx = 1\n", "x = 1\n### END SOLUTION\n",
                                 "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n"])
def test_unbalanced_markers_are_errors(bad):
    with pytest.raises(ValueError, match="SOLUTION"):
        ex.stub_regions(bad, ex.CODE_STUB)


def small_course() -> dict:
    return notebook([
        code(SQUARE, SOLUTION),
        code("assert square(3) == 9, 'square(3) should be 9'\nprint('PASS  square(3)')", check_meta("t-square-check")),
        code("def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n    ### END SOLUTION\n",
             {**SOLUTION, "grade_id": "t-cube"}),
        code("assert cube(2) == 8", check_meta("t-cube-check")),
    ])


def test_grade_reference_student_and_broken(tmp_path):
    ref = write(tmp_path, small_course())
    out = run_grade(ref)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-3:] == ["t-square-check: passed", "t-cube-check: passed",
                                            "total: 2 passed, 0 failed, 0 not attempted"]
    student = notebook([ex.student_cell(c) for c in small_course()["cells"]])
    out = run_grade(write(tmp_path, student, "student.ipynb"))
    assert out.stdout.splitlines()[-1] == "total: 0 passed, 0 failed, 2 not attempted", out.stdout
    broken = small_course()
    broken["cells"][0]["source"] = SQUARE.replace("x * x", "x + x")
    out = run_grade(write(tmp_path, broken, "broken.ipynb"))
    assert out.stdout.splitlines()[-3:] == ["t-square-check: failed", "t-cube-check: passed",
                                            "total: 1 passed, 1 failed, 0 not attempted"]


def test_timeout_fails_that_exercise_and_grading_goes_on(tmp_path):
    nb = small_course()
    nb["cells"][0]["source"] = SQUARE.replace("y = x * x", "import time\n    time.sleep(60)\n    y = x * x")
    out = run_grade(write(tmp_path, nb), GRADE_CELL_TIMEOUT_S="3")
    assert out.stdout.splitlines()[-3:] == ["t-square-check: failed", "t-cube-check: passed",
                                            "total: 1 passed, 1 failed, 0 not attempted"], out.stdout


def test_dead_kernel_fails_the_rest_and_exits_nonzero(tmp_path):
    nb = small_course()
    nb["cells"].insert(2, code("import os\nos._exit(1)"))
    out = run_grade(write(tmp_path, nb))
    assert out.returncode != 0
    assert out.stdout.splitlines()[-3:] == ["t-square-check: passed", "t-cube-check: failed",
                                            "total: 1 passed, 1 failed, 0 not attempted"], out.stdout
    assert "kernel died" in out.stderr


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"cells": "x"})])
def test_grade_rejects_missing_or_non_notebook(tmp_path, content):
    path = tmp_path / "x.ipynb"
    if content is not None:
        path.write_text(content)
    out = run_grade(path)
    assert out.returncode != 0 and out.stderr.startswith("error: ") and str(path) in out.stderr


# --------------------------------------------------------------------------- the series itself
NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))


@pytest.fixture(scope="module")
def student_edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("student")
    ex.write_student_edition(out)
    return out


def regions(text: str) -> list[list[str]]:
    """The lines strictly inside each solution region of ``text``."""
    found, current = [], None
    for line in text.split("\n"):
        if line.strip() == ex.BEGIN:
            current = []
        elif line.strip() == ex.END:
            found.append(current)
            current = None
        elif current is not None:
            current.append(line)
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_keeps_nothing_of_a_solution(student_edition, path):
    ref = json.loads(path.read_text())
    stu = json.loads((student_edition / "notebooks" / path.name).read_text())
    assert len(ref["cells"]) == len(stu["cells"])
    n_regions = 0
    for r, s in zip(ref["cells"], stu["cells"]):
        r_src, s_src = ex.source(r), ex.source(s)
        assert not {ex.BEGIN, ex.END} & {line.strip() for line in s_src.split("\n")}
        assert not s.get("outputs"), "the student edition carries no outputs"
        outside = set(ex.stub_regions(r_src, ()).split("\n"))
        for region in regions(r_src):
            n_regions += 1
            for line in region:
                if line.strip() and line not in outside:
                    assert line not in s_src.split("\n"), f"{path.name}: solution line survived: {line!r}"
    assert n_regions >= 1, f"{path.name} has no exercise"
    ids = [ex.nbgrader(c)["grade_id"] for c in ref["cells"] if ex.nbgrader(c)]
    assert len(ids) == len(set(ids)), f"{path.name}: duplicate grade_id"


def test_student_edition_has_what_students_need(student_edition):
    for name in ("helpers/__init__.py", "pyproject.toml", "environment.yml", "README.md", "scripts/exercises.py"):
        assert (student_edition / name).is_file(), name


def test_grade_ids_are_unique_across_the_series():
    ids = [ex.nbgrader(c)["grade_id"] for p in NOTEBOOKS for c in json.loads(p.read_text())["cells"]
           if ex.nbgrader(c)]
    assert len(ids) == len(set(ids))


NB01 = REPO / "notebooks" / "01_matrix_chain_backprop.ipynb"


def graded(out: subprocess.CompletedProcess) -> dict[str, str]:
    lines = [ln for ln in out.stdout.splitlines() if ": " in ln and not ln.startswith("total")]
    return dict(ln.rsplit(": ", 1) for ln in lines)


def test_notebook01_reference_passes_every_exercise(tmp_path):
    out = run_grade(NB01)
    result = graded(out)
    assert result and set(result.values()) == {"passed"}, out.stdout + out.stderr


def test_notebook01_student_edition_is_not_attempted(student_edition, tmp_path):
    copy = tmp_path / "renamed.ipynb"  # ids come from the metadata, not the file name
    copy.write_text((student_edition / "notebooks" / NB01.name).read_text())
    result = graded(run_grade(copy))
    assert result and set(result.values()) == {"not attempted"}, result


def test_notebook01_one_broken_region_fails_exactly_one_exercise(tmp_path):
    nb = json.loads(NB01.read_text())
    target = next(c for c in nb["cells"] if ex.nbgrader(c).get("solution") and c["cell_type"] == "code"
                  and any(" + " in ln or " - " in ln for r in regions(ex.source(c)) for ln in r))
    src = ex.source(target)
    body = regions(src)[0]
    line = next(ln for ln in body if " + " in ln or " - " in ln)
    flipped = line.replace(" + ", " - ", 1) if " + " in line else line.replace(" - ", " + ", 1)
    target["source"] = src.replace(line, flipped, 1)
    path = tmp_path / "broken.ipynb"
    path.write_text(json.dumps(nb))
    result = graded(run_grade(path))
    assert list(result.values()).count("failed") == 1 and "not attempted" not in result.values(), result
