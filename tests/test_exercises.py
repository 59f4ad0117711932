"""The exercises as a course uses them, with nbgrader itself: its release (`make student`), its autograde
(`make grade`) on notebook 01 and on small synthetic notebooks, and the student edition's files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import course

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("0*.ipynb"))
NB01 = REPO / "notebooks" / "01_matrix_chain_backprop.ipynb"
ENV = {**os.environ, "HELPERS_DATA_SOURCE": "offline"}


def make_grade(path: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``make grade NB=path`` as a student runs it (the environment of this test run)."""
    return subprocess.run(["make", "-s", "grade", f"NB={path}", f"VENV={sys.prefix}"], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=900)


def statuses(out: str) -> dict[str, str]:
    """grade_id -> status (score dropped) of each line of ``make grade``'s output."""
    found = {}
    for line in out.splitlines():
        if m := re.match(r"^(\S+): (.+?)(?: \([\d.]+/[\d.]+\))?$", line):
            if m.group(1) not in ("total", "nbgrader"):
                found[m.group(1)] = m.group(2)
    return found


def write(path: Path, nb: dict) -> Path:
    path.write_text(json.dumps(nb, indent=1))
    return path


# ---- nbgrader's release ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def student_edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("edition") / "student"
    subprocess.run([sys.executable, str(REPO / "scripts" / "exercises.py"), "student", str(out)], check=True,
                   capture_output=True)
    return out


def test_nbgrader_releases_all_six_and_equals_make_student(tmp_path, student_edition):
    """`nbgrader generate_assignment` with the README's config, run as an instructor runs it."""
    (tmp_path / "source" / "ps1").mkdir(parents=True)
    for path in NOTEBOOKS:
        (tmp_path / "source" / "ps1" / path.name).write_text(path.read_text())
    (tmp_path / "nbgrader_config.py").write_text((REPO / "nbgrader_config.py").read_text())
    bin_dir = Path(sys.executable).parent
    done = subprocess.run([str(bin_dir / "nbgrader"), "generate_assignment", "ps1"], cwd=tmp_path,
                          env={**ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stdout + done.stderr and "ERROR" not in done.stdout + done.stderr, done.stdout + done.stderr
    for path in NOTEBOOKS:
        released = json.loads((tmp_path / "release" / "ps1" / path.name).read_text())["cells"]
        ours = json.loads((student_edition / "notebooks" / path.name).read_text())["cells"]
        assert [(c["cell_type"], course.text(c), c["metadata"]) for c in released] == \
               [(c["cell_type"], course.text(c), c["metadata"]) for c in ours], path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_edition_keeps_nothing_of_a_solution_or_a_hidden_test(student_edition, path):
    ref = json.loads(path.read_text())["cells"]
    stu = json.loads((student_edition / "notebooks" / path.name).read_text())["cells"]
    assert len(ref) == len(stu)
    solution_lines, outside = set(), set()  # lines inside a solution or hidden-test region; lines outside any
    for cell in ref:
        inside = False
        for line in course.text(cell).splitlines():
            if course.MARKER.match(line):
                inside = line.strip().startswith("### BEGIN")
            elif inside and len(line.strip()) > 3:
                solution_lines.add(line)
            elif not inside:
                outside.add(line)
    for cell in stu:
        assert not cell.get("outputs"), "the student edition carries no outputs"
        for line in course.text(cell).splitlines():
            assert "SOLUTION" not in line and "HIDDEN TESTS" not in line, line
            assert line not in solution_lines or line in outside, f"{path.name}: solution line survived: {line!r}"


def test_markers_only_where_they_belong():
    """nbgrader treats any line that contains a marker as one: none in prose, none outside their cells."""
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            m = course.meta(cell)
            for line in course.text(cell).splitlines():
                if "BEGIN SOLUTION" in line or "END SOLUTION" in line:
                    assert m.get("solution"), f"{path.name}: marker outside a solution cell: {line!r}"
                if "HIDDEN TESTS" in line:
                    assert course.is_check(cell), f"{path.name}: hidden-test marker outside a check cell"


def test_every_check_cell_has_hidden_tests():
    checks = [c for p in NOTEBOOKS for c in json.loads(p.read_text())["cells"] if course.is_check(c)]
    assert len(checks) >= 20
    for cell in checks:
        source = course.text(cell)
        visible, hidden = source.split("### BEGIN HIDDEN TESTS")
        assert "grade_" in visible and "seed=1" in hidden and "### END HIDDEN TESTS" in hidden, source


def test_grade_ids_are_unique_across_the_series():
    ids = [i for p in NOTEBOOKS for i in course.grade_ids(json.loads(p.read_text()))]
    assert len(ids) == len(set(ids))


def test_student_edition_names_only_what_it_has(student_edition):
    """No cell, and no string in helpers, names a make target or a file that the edition lacks."""
    targets = set(re.findall(r"^([a-z-]+):", (student_edition / "Makefile").read_text(), re.M))
    texts = [course.text(c) for p in (student_edition / "notebooks").glob("*.ipynb")
             for c in json.loads(p.read_text())["cells"]]
    texts += [p.read_text() for p in (student_edition / "helpers").glob("*.py")]
    texts.append((student_edition / "README.md").read_text())
    for text in texts:
        for target in re.findall(r"`make ([a-z-]+)", text):
            assert target in targets, f"`make {target}` is not in the edition's Makefile"
        for name in re.findall(r"\b((?:bench|tests|scripts|notebooks|figures)/[\w./-]*\w)", text):
            assert (student_edition / name).exists() or name.startswith(("figures/", "notebooks/0")), name
    for name in ("helpers/__init__.py", "helpers/course.py", "pyproject.toml", "environment.yml", "Makefile",
                 "nbgrader_config.py", "scripts/exercises.py", "released/01_matrix_chain_backprop.ipynb"):
        assert (student_edition / name).is_file(), name
    readme = (student_edition / "README.md").read_text()
    for needed in ("HELPERS_DATA_SOURCE=offline", "HELPERS_QUICK", "make grade", "Exit status", "marker"):
        assert needed in readme, needed


def test_base_dependencies_cover_the_default_configuration():
    import tomllib

    deps = " ".join(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    for name in ("mlxtend", "nbgrader", "optuna", "torch", "torchvision", "matplotlib", "tqdm"):
        assert name in deps, name


# ---- make grade on notebook 01: three submissions ------------------------------------------------------

def test_notebook01_reference_without_markers_passes_everything(tmp_path):
    path = write(tmp_path / "solved.ipynb", course.strip_markers(json.loads(NB01.read_text())))
    out = make_grade(path)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert set(statuses(out.stdout).values()) == {"passed", "written answer, graded by hand"}, out.stdout
    assert "stderr" not in out.stdout  # no check cell writes to stderr (nbgrader would score it 0)
    assert lines[-1] == "total: 5 passed, 0 failed, 0 not attempted, 0 timed out; 6 of 6 auto-graded points"
    assert [ln.split(":")[0] for ln in lines[:5]] == [f"01-{n}-check" for n in (
        "matrix-chain-loss", "matrix-chain-grads", "central-difference", "dropped-mean", "derivative-errors")]


def test_notebook01_untouched_release_is_not_attempted(tmp_path, student_edition):
    path = tmp_path / "any other name.ipynb"  # identified by its grade_ids, not by its file name
    path.write_text((student_edition / "notebooks" / NB01.name).read_text())
    out = make_grade(path)
    assert out.returncode != 0
    result = statuses(out.stdout)
    assert result and set(result.values()) == {"not attempted", "not answered"}, out.stdout


def test_notebook01_one_flipped_sign_fails_exactly_that_exercise_even_with_an_edited_check(tmp_path):
    nb = course.strip_markers(json.loads(NB01.read_text()))
    cell = next(c for c in nb["cells"] if course.meta(c).get("grade_id") == "01-matrix-chain-grads")
    assert cell["source"].count("dY = dU * U * (1 - U)") == 1
    cell["source"] = cell["source"].replace("dY = dU * U * (1 - U)", "dY = -dU * U * (1 - U)")
    check = next(c for c in nb["cells"] if course.meta(c).get("grade_id") == "01-matrix-chain-grads-check")
    check["source"] = "print('PASS  everything')"  # an edited check: autograde restores the locked original
    out = make_grade(write(tmp_path / "flipped.ipynb", nb))
    assert out.returncode != 0
    result = statuses(out.stdout)
    assert [k for k, v in result.items() if v != "passed" and "written" not in v] == ["01-matrix-chain-grads-check"]
    assert result["01-matrix-chain-grads-check"] == "failed"
    assert "    FAIL  dA vs autograd" in out.stdout and "hint: the sign is flipped" in out.stdout


# ---- the grading rules on small synthetic notebooks -----------------------------------------------------

SOLUTION = {"grade": False, "locked": False, "schema_version": 3, "solution": True, "task": False}
CHECK = {"grade": True, "locked": True, "points": 1, "schema_version": 3, "solution": False, "task": False}


def cell(source: str, grade_id: str | None = None, check: bool = False) -> dict:
    meta = {"nbgrader": {**(CHECK if check else SOLUTION), "grade_id": grade_id}} if grade_id else {}
    return {"cell_type": "code", "id": f"c{abs(hash(source)) % 10**8:08d}", "metadata": meta, "source": source,
            "outputs": [], "execution_count": None}


def synthetic(square_body: str, extra: list[dict] = ()) -> dict:
    cells = [cell(f"def square(x):\n    ### BEGIN SOLUTION\n    {square_body}\n    ### END SOLUTION", "t-square"),
             cell("assert square(3) == 9\nprint('PASS  square(3)')", "t-square-check", check=True),
             *extra,
             cell("def cube(x):\n    ### BEGIN SOLUTION\n    return x ** 3\n    ### END SOLUTION", "t-cube"),
             cell("assert cube(2) == 8", "t-cube-check", check=True)]
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def test_timeout_rule_bounds_a_solution_that_never_returns(tmp_path):
    """A solution that loops forever times out its own exercise; later cells that call it get a short limit,
    and the later exercises are still graded (a liveness bound, not a speed target)."""
    source = write(tmp_path / "t.ipynb", synthetic("return x * x"))
    loops = synthetic("while True:\n        pass",
                      extra=[cell(f"square({i})") for i in range(2)])  # each would otherwise wait the full limit
    start = time.monotonic()
    items, error, _ = course.autograde(write(tmp_path / "loops.ipynb", loops), [source], keep_stubs=False,
                                       limit_s=4)
    elapsed = time.monotonic() - start
    assert error == ""
    assert [r.line() for r in items] == ["t-square-check: timed out after 4 s (0/1)", "t-cube-check: passed (1/1)"]
    assert elapsed < 4 + 2 * course.AFTER_TIMEOUT_S + 40, elapsed  # the limits, plus nbgrader's own start


@pytest.mark.course
def test_dead_kernel_reports_the_rest_failed_with_nbgraders_error(tmp_path):
    source = write(tmp_path / "t.ipynb", synthetic("return x * x"))
    dying = synthetic("return x * x", extra=[cell("import os\nos._exit(1)")])
    items, error, _ = course.autograde(write(tmp_path / "dies.ipynb", dying), [source], keep_stubs=False)
    assert error, "nbgrader's own error is reported"
    assert [r.status for r in items] == ["failed", "failed"] or items[0].status == "passed"
    assert items[-1].status == "failed"


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"cells": "x"}),
                                     json.dumps({"cells": [], "metadata": {}, "nbformat": 4})])
def test_usage_errors_exit_2(tmp_path, content):
    path = tmp_path / "x.ipynb"
    if content is not None:
        path.write_text(content)
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "exercises.py"), "grade", str(path)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and out.stderr.startswith("error: ") and str(path) in out.stderr, out.stderr


def test_make_grade_turns_a_usage_error_into_its_own_failure(tmp_path):
    out = make_grade(tmp_path / "missing.ipynb")
    assert out.returncode != 0 and "no such file" in out.stderr


def test_readme_shows_the_nbgrader_config_that_grading_uses():
    readme = (REPO / "README.md").read_text()
    assert (REPO / "nbgrader_config.py").read_text() in readme
    assert course.nbgrader_config() == (REPO / "nbgrader_config.py").read_text()
