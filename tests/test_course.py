"""nbgrader end to end on every notebook with exercises, and the student edition on its own (make test-course).

For 01, 02, 03, 05 and 06, three submissions (solved without marker lines, the untouched release, one sign
flipped) are graded by an instructor's `nbgrader autograde` (one call, three students, the README's
nbgrader_config.py) and by `make grade`: the two agree exercise by exercise. Then the student edition, built
into a temporary folder, is filled in with the reference code and graded there with its own helpers, and
graded untouched."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import course

pytestmark = pytest.mark.course
REPO = Path(__file__).resolve().parents[1]
WITH_EXERCISES = ["01_matrix_chain_backprop", "02_manual_backprop_mlp", "03_cifar2_mlp_sgd", "05_numpy_mlp_mnist",
                  "06_mnist_model_zoo"]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HELPERS_DATA_SOURCE": "offline", "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


@pytest.fixture(scope="module")
def edition(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course") / "student"
    subprocess.run([sys.executable, str(REPO / "scripts" / "exercises.py"), "student", str(out)], check=True,
                   capture_output=True, env=ENV)
    return out


def flipped(nb: dict) -> dict:
    """``nb`` with the first sign (``+``, ``-``, ``+=``, ``-=``) in the code of a solution region flipped."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        if cell["cell_type"] != "code" or not course.meta(cell).get("solution"):
            continue
        lines, inside = course.text(cell).split("\n"), False
        for i, line in enumerate(lines):
            if course.MARKER.match(line):
                inside = "BEGIN" in line
            elif inside and (match := re.search(r" ([-+])=? ", line.split("#")[0])):
                other = "+" if match.group(1) == "-" else "-"
                lines[i] = line[:match.start(1)] + other + line[match.end(1):]
                cell["source"] = "\n".join(lines)
                return nb
    raise AssertionError("no sign to flip")


def submissions(name: str, edition: Path) -> dict[str, dict]:
    source = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())
    return {"solved": course.strip_markers(source), "untouched": json.loads((edition / "notebooks" /
                                                                            f"{name}.ipynb").read_text()),
            "flipped": course.strip_markers(flipped(source))}


def instructor_autograde(name: str, subs: dict[str, dict], folder: Path) -> dict[str, dict[str, float]]:
    """An instructor's course: `nbgrader generate_assignment` and one `nbgrader autograde` for three students;
    student -> grade_id -> score, read from the gradebook."""
    from nbgrader.api import Gradebook

    (folder / "source" / "ps1").mkdir(parents=True)
    shutil.copyfile(REPO / "notebooks" / f"{name}.ipynb", folder / "source" / "ps1" / f"{name}.ipynb")
    shutil.copyfile(REPO / "nbgrader_config.py", folder / "nbgrader_config.py")
    for student, nb in subs.items():
        (folder / "submitted" / student / "ps1").mkdir(parents=True)
        (folder / "submitted" / student / "ps1" / f"{name}.ipynb").write_text(json.dumps(nb))
    for args in (["generate_assignment", "ps1"], ["autograde", "ps1", "--create"]):
        done = subprocess.run([str(BIN / "nbgrader"), *args], cwd=folder, env=ENV, capture_output=True, text=True,
                              timeout=1200)
        assert done.returncode == 0, done.stdout + done.stderr
    with Gradebook(f"sqlite:///{folder / 'gradebook.db'}") as gb:
        return {s: {g.name: g.score for g in gb.find_submission_notebook(name, "ps1", s).grades
                    if g.cell.cell_type == "code"} for s in subs}


def make_grade(path: Path, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "grade", f"NB={path}", f"VENV={sys.prefix}"], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=1200)


def scores(out: str) -> dict[str, float]:
    """grade_id -> score of the auto-graded lines of `make grade`'s output."""
    found = {}
    for line in out.splitlines():
        if line.endswith(")") and "/" in line and not line.startswith(("total", " ")):
            gid, rest = line.split(": ", 1)
            found[gid] = float(rest.rsplit("(", 1)[1].split("/")[0])
    return found


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_nbgrader_autograde_and_make_grade_agree(name, edition, tmp_path):
    subs = submissions(name, edition)
    paths = {k: tmp_path / f"{k}.ipynb" for k in subs}
    for k, nb in subs.items():
        paths[k].write_text(json.dumps(nb))
    with ThreadPoolExecutor(2) as pool:
        instructor = pool.submit(instructor_autograde, name, subs, tmp_path / "course")
        ours = {k: pool.submit(make_grade, p) for k, p in paths.items()}
        ours = {k: f.result() for k, f in ours.items()}
        nbgrader_scores = instructor.result()
    for student, out in ours.items():
        assert scores(out.stdout) == nbgrader_scores[student], f"{student}:\n{out.stdout}"
    assert ours["solved"].returncode == 0 and "failed (" not in ours["solved"].stdout, ours["solved"].stdout
    assert "not attempted" in ours["untouched"].stdout and "passed (" not in ours["untouched"].stdout
    assert ours["flipped"].returncode != 0 and "failed (" in ours["flipped"].stdout, ours["flipped"].stdout


def edition_grade(edition: Path, name: str) -> subprocess.CompletedProcess:
    """`make grade` inside the edition, with the edition's own helpers (PYTHONPATH) and scripts."""
    return make_grade(edition / "notebooks" / f"{name}.ipynb", cwd=edition, env={**ENV, "PYTHONPATH": str(edition)})


def test_untouched_student_edition_is_not_attempted_and_not_answered(edition):
    for name in WITH_EXERCISES:
        out = edition_grade(edition, name)
        lines = out.stdout.splitlines()
        statuses = {ln.split(": ", 1)[1].split(" (")[0] for ln in lines[:-1] if ": " in ln}
        assert statuses == {"not attempted", "not answered"}, out.stdout + out.stderr
        assert lines[-1].endswith("(visible checks only)") and out.returncode != 0


def test_student_edition_filled_in_runs_on_its_own_and_passes(edition, tmp_path):
    """The edition, copied, its solution cells filled in from the reference (no marker lines), graded in place."""
    filled = tmp_path / "filled"
    shutil.copytree(edition, filled)
    for path in sorted((filled / "notebooks").glob("0*.ipynb")):
        reference = course.strip_markers(json.loads((REPO / "notebooks" / path.name).read_text()))
        solutions = {course.meta(c)["grade_id"]: c["source"] for c in reference["cells"]
                     if course.meta(c).get("solution")}
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if course.meta(cell).get("solution"):
                cell["source"] = solutions[course.meta(cell)["grade_id"]]
        path.write_text(json.dumps(nb))
        items, error, graded = _grade_in(filled, path)
        assert error == "" and graded is not None, error
        raised = [course.text(c)[:80] for c in graded["cells"] if any(o.get("output_type") == "error"
                                                                       for o in c.get("outputs", []))]
        assert not raised, f"{path.name}: cells raised: {raised}"
        assert all(r.status == "passed" for r in items if r.points), [r.line() for r in items]


def _grade_in(edition: Path, path: Path):
    """The edition's own grading code (its helpers.course, its released/ notebooks), in a fresh process."""
    code = ("import json, sys; from pathlib import Path; from helpers.course import autograde\n"
            "items, error, graded = autograde(Path(sys.argv[1]), sorted(Path('released').glob('0*.ipynb')), True)\n"
            "print(json.dumps({'items': [vars(r) for r in items], 'error': error, 'graded': graded}))")
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=edition, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(edition)}, timeout=1200)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    return [course.Result(**r) for r in out["items"]], out["error"], out["graded"]
