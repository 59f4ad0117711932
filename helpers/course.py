"""The course side of the exercises, run by nbgrader itself: the student edition is nbgrader's release,
and a notebook is graded by nbgrader's autograde as one student's submission, its scores read from
nbgrader's gradebook.

An exercise is a check cell (``grade: true``, not a solution, code) and the solution cells before it,
back to the previous check. Its status is ``passed``, ``failed`` (with the check's own ``FAIL`` lines),
``not attempted`` (every solution cell still equals the released stub, whitespace and marker lines
aside) or ``timed out``. A written answer is a manually graded markdown cell: ``not answered`` while it
equals the released stub.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]  # not helpers.config's: grading imports neither torch nor nbgrader

ASSIGNMENT, STUDENT = "exercises", "student"
CELL_LIMIT_S = 60  # per cell, in quick mode; the README's nbgrader_config.py sets the same
AFTER_TIMEOUT_S = 5  # per non-check cell once a cell has timed out
MARKER = re.compile(r"^\s*#*\s*(BEGIN|END) (SOLUTION|HIDDEN TESTS)\s*$")


class UsageError(Exception):
    """A notebook that cannot be graded: missing, not a notebook, or not one of this series."""


@lru_cache(maxsize=1)
def grading_execute() -> type:
    """``GradingExecute``: nbgrader's Execute plus a liveness rule. Once a cell has timed out, cells that are
    not check cells get ``after_timeout`` seconds, so a function that never returns stalls no later cell for
    long. (Built on first use: importing this module loads neither nbgrader nor torch.)"""
    from nbgrader.preprocessors import Execute
    from traitlets import Integer

    class GradingExecute(Execute):
        after_timeout = Integer(AFTER_TIMEOUT_S, help="Limit (s) of non-check cells after a timeout.").tag(config=True)

        def preprocess(self, nb, resources=None, km=None):
            self._timed_out = False
            return super().preprocess(nb, resources, km)

        def _get_timeout(self, cell):
            limit = super()._get_timeout(cell)
            if getattr(self, "_timed_out", False) and cell is not None and not is_check(cell):
                return min(limit or self.after_timeout, self.after_timeout)
            return limit

        def on_cell_executed(self, **kwargs):
            super().on_cell_executed(**kwargs)
            self._timed_out = self._timed_out or timed_out(kwargs["cell"])

    return GradingExecute


def autograde_preprocessors() -> list:
    """nbgrader's own autograde preprocessors, with ``GradingExecute`` in place of ``Execute``."""
    from nbgrader.converters import Autograde
    from nbgrader.preprocessors import Execute

    defaults = Autograde.class_traits()["autograde_preprocessors"].default()
    return [grading_execute() if p is Execute else p for p in defaults]


# ---- cells ----------------------------------------------------------------------------------------------

def meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _joined(value) -> str:
    return "".join(value) if isinstance(value, list) else value


def text(cell) -> str:
    return _joined(cell["source"])


def is_check(cell) -> bool:
    """An auto-graded test cell: code, graded, not a solution."""
    return cell["cell_type"] == "code" and bool(meta(cell).get("grade")) and not meta(cell).get("solution")


def is_written(cell) -> bool:
    """A manually graded written answer: a graded markdown solution cell."""
    return cell["cell_type"] == "markdown" and bool(meta(cell).get("grade")) and bool(meta(cell).get("solution"))


def timed_out(cell) -> bool:
    return any(o.get("output_type") == "error" and o.get("ename") in ("CellTimeoutError", "KeyboardInterrupt")
               for o in cell.get("outputs", []))


def _normalised(source: str) -> str:
    """``source`` without marker lines and whitespace: a stub equals itself typed with or without markers."""
    return "".join("".join(line.split()) for line in source.splitlines() if not MARKER.match(line))


def grade_ids(nb: dict) -> list[str]:
    return [meta(c)["grade_id"] for c in nb["cells"] if meta(c).get("grade_id")]


def read_notebook(path: Path) -> dict:
    """The notebook as JSON; :class:`UsageError` if missing or not a notebook."""
    if not path.is_file():
        raise UsageError(f"{path}: no such file. Pass NB=path/to/notebook.ipynb.")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path} is not a Jupyter notebook (not JSON: {err}).") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or nb.get("nbformat") != 4:
        raise UsageError(f"{path} is not a Jupyter notebook (no nbformat 4 'cells' list).")
    return nb


def strip_markers(nb: dict) -> dict:
    """A copy of ``nb`` without marker lines: what a student who solved every exercise hands in."""
    nb = json.loads(json.dumps(nb))
    for cell in nb["cells"]:
        cell["source"] = "".join(ln for ln in text(cell).splitlines(keepends=True) if not MARKER.match(ln))
    return nb


def find_source(submission: dict, candidates: list[Path], name: str = "this notebook") -> Path:
    """The notebook among ``candidates`` whose graded cells' ``grade_id``s the submission carries (never by
    file name, so a renamed copy grades the same)."""
    ids = set(grade_ids(submission))
    for path in candidates:
        graded = {meta(c)["grade_id"] for c in read_notebook(path)["cells"] if meta(c).get("grade")}
        if graded and graded <= ids:
            return path
    raise UsageError(f"{name} carries none of the series' exercises (no known grade_id in its cells); "
                     "grade a notebook of the series, e.g. NB=notebooks/01_matrix_chain_backprop.ipynb.")


# ---- nbgrader runs ---------------------------------------------------------------------------------------

def _nbgrader(course: Path, *args: str) -> subprocess.CompletedProcess:
    """``nbgrader ARGS`` in ``course`` (its ``nbgrader_config.py`` applies; RuntimeError if nbgrader cannot load
    it), this environment's bin/ on PATH (nbgrader runs alembic as a command)."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    done = subprocess.run([os.path.join(bin_dir, "nbgrader"), *args, "--CourseDirectory.root=" + str(course)],
                          cwd=course, env=env, capture_output=True, text=True)
    if "Exception while loading config file" in done.stdout + done.stderr:  # nbgrader only logs it, then goes on
        raise RuntimeError(f"nbgrader could not load {course / 'nbgrader_config.py'}:\n{done.stdout}{done.stderr}")
    return done


def nbgrader_config() -> str:
    """The text of the repository's ``nbgrader_config.py`` (the README shows the same file)."""
    return (REPO_ROOT / "nbgrader_config.py").read_text()


def new_course(sources: list[Path], keep_stubs: bool = False) -> Path:
    """A temporary nbgrader course with ``sources`` as assignment ``exercises``, released by
    ``generate_assignment`` (which fills the gradebook). ``keep_stubs``: the sources are already released
    notebooks, so nothing is cleared (``ClearSolutions`` would replace a cell without markers whole)."""
    course = Path(tempfile.mkdtemp(prefix="nbgrader-course-"))
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    for path in sources:
        shutil.copyfile(path, course / "source" / ASSIGNMENT / path.name)
    config = nbgrader_config()
    if keep_stubs:
        config += "\n# Released notebooks as the source: clear nothing.\nc.ClearSolutions.enabled = False\n"
    (course / "nbgrader_config.py").write_text(config)
    done = _nbgrader(course, "generate_assignment", ASSIGNMENT, "--force")
    if done.returncode != 0:
        raise RuntimeError(f"nbgrader generate_assignment failed:\n{done.stdout}{done.stderr}")
    return course


def release(sources: list[Path], out: Path) -> list[Path]:
    """nbgrader's release of ``sources`` (solutions stubbed, hidden tests removed, outputs cleared) in ``out``."""
    course = new_course(sources)
    try:
        out.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy2(course / "release" / ASSIGNMENT / p.name, out / p.name)) for p in sources]
    finally:
        shutil.rmtree(course, ignore_errors=True)


# ---- grading ---------------------------------------------------------------------------------------------

@dataclass
class Result:
    """One auto-graded exercise or written answer, as ``make grade`` prints it."""

    grade_id: str
    status: str  # passed, failed, not attempted, timed out N s; written: written answer / not answered
    score: float = 0.0
    points: float = 0.0
    details: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.status in ("written answer, graded by hand", "not answered"):
            return f"{self.grade_id}: {self.status}"
        return f"{self.grade_id}: {self.status} ({self.score:g}/{self.points:g})" + "".join(
            f"\n    {d}" for d in self.details)


def _unchanged(cells: list[dict], released: dict[str, dict]) -> bool:
    """Whether every cell equals its released stub, whitespace and marker lines aside."""
    return all(c.get("grade_id") in released and
               _normalised(text(c["cell"])) == _normalised(text(released[c["grade_id"]])) for c in cells)


def _fail_lines(cell) -> list[str]:
    """What a failed check cell says: its FAIL lines, else its error; and whether it wrote to stderr."""
    outputs = cell.get("outputs", [])
    lines = [ln for o in outputs if o.get("output_type") == "stream" and o.get("name") == "stdout"
             for ln in _joined(o.get("text", "")).splitlines() if ln.startswith("FAIL")]
    errors = [f"{o['ename']}: {o.get('evalue', '')}".strip() for o in outputs
              if o.get("output_type") == "error" and o.get("ename") != "AssertionError"]
    stderr = [_joined(o.get("text", "")).strip().splitlines()[:1] for o in outputs
              if o.get("output_type") == "stream" and o.get("name") == "stderr"]
    return (lines or errors) + [f"the check wrote to stderr, which nbgrader scores 0: {s[0] if s else ''}"
                                for s in stderr[:1]]


def results(source: dict, submission: dict, released: dict, graded: dict | None, scores: dict,
            limit_s: int = CELL_LIMIT_S) -> list[Result]:
    """One :class:`Result` per exercise and written answer of ``source``, in notebook order. ``graded``: the
    autograded notebook (None if nbgrader failed), ``scores``: grade_id -> (score, max_score)."""
    by_id = {meta(c)["grade_id"]: c for c in submission["cells"] if meta(c).get("grade_id")}
    stubs = {meta(c)["grade_id"]: c for c in released["cells"] if meta(c).get("grade_id")}
    ran = {meta(c)["grade_id"]: c for c in (graded or {"cells": []})["cells"] if meta(c).get("grade_id")}
    out, solutions = [], []
    for cell in source["cells"]:
        gid, m = meta(cell).get("grade_id"), meta(cell)
        if m.get("solution") and cell["cell_type"] == "code":
            solutions.append({"grade_id": gid, "cell": by_id.get(gid, {"source": ""})})
        elif is_written(cell):
            answered = not _unchanged([{"grade_id": gid, "cell": by_id.get(gid, {"source": ""})}], stubs)
            out.append(Result(gid, "written answer, graded by hand" if answered else "not answered"))
        elif is_check(cell):
            points = float(m.get("points", 0))
            score = scores.get(gid, (0.0, points))[0] or 0.0
            if solutions and _unchanged(solutions, stubs):
                result = Result(gid, "not attempted", 0, points)
            elif gid not in ran:
                result = Result(gid, "failed", 0, points)
            elif timed_out(ran[gid]):
                result = Result(gid, f"timed out after {limit_s} s", 0, points)
            elif score >= points:
                result = Result(gid, "passed", score, points)
            else:
                result = Result(gid, "failed", score, points, _fail_lines(ran[gid]))
            out.append(result)
            solutions = []
    return out


def summary(items: list[Result], visible_only: bool) -> str:
    """The last line of ``make grade``."""
    auto = [r for r in items if r.points]
    count = {s: sum(r.status.startswith(s) for r in auto) for s in ("passed", "failed", "not attempted", "timed out")}
    line = (f"total: {count['passed']} passed, {count['failed']} failed, {count['not attempted']} not attempted, "
            f"{count['timed out']} timed out; {sum(r.score for r in auto):g} of {sum(r.points for r in auto):g} "
            f"auto-graded points")
    return line + (" (visible checks only)" if visible_only else "")


def _scores(course: Path, notebook: str) -> dict:
    """grade_id -> (score, max_score) of the student's submission, from nbgrader's gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        try:
            nb = gb.find_submission_notebook(notebook, ASSIGNMENT, STUDENT)
        except MissingEntry:
            return {}
        return {g.name: (g.score, g.max_score) for g in nb.grades}


def autograde(submission: Path, sources: list[Path], keep_stubs: bool,
              limit_s: int | None = None) -> tuple[list[Result], str, dict | None]:
    """Grade ``submission`` with nbgrader's autograde against the source among ``sources`` that it matches.

    Returns the results, nbgrader's error line ('' when it graded the notebook) and the autograded notebook
    (None if there is none). ``limit_s`` overrides the per-cell limit of ``nbgrader_config.py`` (tests)."""
    student = read_notebook(submission)
    source_path = find_source(student, sources, str(submission))
    course = new_course([source_path], keep_stubs)
    try:
        name = source_path.stem
        folder = course / "submitted" / STUDENT / ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copyfile(submission, folder / f"{name}.ipynb")
        limits = [f"--Execute.timeout={limit_s}", f"--GradingExecute.timeout={limit_s}"] if limit_s else []
        done = _nbgrader(course, "autograde", ASSIGNMENT, "--student", STUDENT, "--force", "--create", *limits)
        graded_path = course / "autograded" / STUDENT / ASSIGNMENT / f"{name}.ipynb"
        graded = json.loads(graded_path.read_text()) if graded_path.is_file() else None
        scores = _scores(course, name) if graded is not None else {}
        error = "" if graded is not None and done.returncode == 0 else _error_line(done.stdout + done.stderr)
        released = json.loads((course / "release" / ASSIGNMENT / f"{name}.ipynb").read_text())
        items = results(read_notebook(source_path), student, released, graded, scores, limit_s or CELL_LIMIT_S)
        return items, error, graded
    finally:
        shutil.rmtree(course, ignore_errors=True)


def _error_line(log: str) -> str:
    """nbgrader's own error, one line: its last ERROR or exception line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "[ERROR]" in ln or re.match(r"^\w+(Error|Exception)\b", ln)]
    return (errors or lines or ["nbgrader failed without a message"])[-1]
