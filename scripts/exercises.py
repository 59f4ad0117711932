"""Exercises of the series: the student edition and the grader (nbgrader's cell conventions).

    python scripts/exercises.py student [OUT]      # what `make student` runs (OUT: build/student)
    python scripts/exercises.py grade NOTEBOOK     # what `make grade NB=...` runs

A solution cell carries ``metadata.nbgrader.solution = true``; inside it the taught code sits
between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines. The student edition replaces each
region by ``# YOUR CODE HERE`` + ``raise NotImplementedError()`` at the region's indentation
(markdown answers by ``YOUR ANSWER HERE``) and clears every output. An auto-graded exercise is a
code cell with ``grade = true`` and ``solution = false`` (its check); it grades the solution
cells between the previous check and itself. Grading runs the notebook in quick mode, cell by
cell, past errors, and prints ``<grade_id>: passed|failed|not attempted`` per exercise.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = ("YOUR ANSWER HERE",)
CELL_TIMEOUT_S = int(os.environ.get("GRADE_CELL_TIMEOUT_S", "120"))  # per cell; a cell may ask for more
STUDENT_README = """# Backpropagation and gradient descent: student edition

Each notebook in `notebooks/` has exercises: a cell with `# YOUR CODE HERE` and
`raise NotImplementedError()` is yours to write; the locked cell right after it checks
your code and prints one line per check. Written questions say `YOUR ANSWER HERE`.

    python3 -m venv .venv && .venv/bin/pip install -e .
    .venv/bin/jupyter lab notebooks/
    .venv/bin/python scripts/exercises.py grade notebooks/01_matrix_chain_backprop.ipynb

The last command runs one notebook in quick mode and prints, per exercise,
`passed`, `failed` or `not attempted`.
"""


def nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_check(cell) -> bool:
    """An auto-graded test cell: code, graded, not a solution."""
    meta = nbgrader(cell)
    return cell["cell_type"] == "code" and meta.get("grade", False) and not meta.get("solution", False)


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def stub_regions(text: str, stub: tuple[str, ...]) -> str:
    """``text`` with every solution region (markers included) replaced by ``stub`` at its indentation."""
    out, inside = [], False
    for line in text.split("\n"):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ValueError(f"nested '{BEGIN}' in:\n{text}")
            inside = True
            indent = line[:len(line) - len(line.lstrip())]
            out += [indent + s for s in stub]
        elif marker == END:
            if not inside:
                raise ValueError(f"'{END}' without '{BEGIN}' in:\n{text}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{BEGIN}' without '{END}' in:\n{text}")
    return "\n".join(out)


def student_cell(cell) -> dict:
    """The student version of one cell: regions stubbed, outputs cleared."""
    cell = json.loads(json.dumps(cell))
    if BEGIN in source(cell):
        stub = CODE_STUB if cell["cell_type"] == "code" else ANSWER_STUB
        cell["source"] = stub_regions(source(cell), stub)
    if cell["cell_type"] == "code":
        cell["outputs"], cell["execution_count"] = [], None
        cell["metadata"].pop("execution", None)
    return cell


def read_notebook(path: Path) -> dict:
    """The notebook as JSON; SystemExit with a clear message if missing or not a notebook."""
    if not path.is_file():
        raise SystemExit(f"error: {path}: no such file. Pass NB=path/to/notebook.ipynb.")
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SystemExit(f"error: {path} is not a Jupyter notebook (not JSON: {err}).") from None
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list) or nb.get("nbformat") != 4:
        raise SystemExit(f"error: {path} is not a Jupyter notebook (no nbformat 4 'cells' list).")
    return nb


def write_student_edition(out: Path) -> None:
    """``out``/notebooks (stubbed, no outputs), plus helpers, environment files, README, this script."""
    if out.exists():
        shutil.rmtree(out)
    (out / "notebooks").mkdir(parents=True)
    for path in sorted((REPO / "notebooks").glob("0*.ipynb")):
        nb = read_notebook(path)
        nb["cells"] = [student_cell(c) for c in nb["cells"]]
        (out / "notebooks" / path.name).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    shutil.copytree(REPO / "helpers", out / "helpers", ignore=shutil.ignore_patterns("__pycache__"))
    (out / "scripts").mkdir()
    shutil.copy2(Path(__file__), out / "scripts" / "exercises.py")
    for name in ("pyproject.toml", "environment.yml"):
        shutil.copy2(REPO / name, out / name)
    (out / "README.md").write_text(STUDENT_README)
    print(f"student edition: {out}/ ({len(list((out / 'notebooks').glob('*.ipynb')))} notebooks)")


def exercises(nb: dict) -> list[tuple[int, str, bool]]:
    """(cell index, grade_id, attempted) of each auto-graded exercise, in order."""
    found, solutions = [], []
    for i, cell in enumerate(nb["cells"]):
        if nbgrader(cell).get("solution") and cell["cell_type"] == "code":
            solutions.append(source(cell))
        elif is_check(cell):
            attempted = any(s != stub_regions(s, CODE_STUB) for s in solutions) if solutions else True
            found.append((i, nbgrader(cell)["grade_id"], attempted))
            solutions = []
    return found


def failed(cell) -> bool:
    return any(out.get("output_type") == "error" for out in cell.get("outputs", []))


def grade(path: Path) -> int:
    """Execute ``path`` in quick mode and print one line per exercise; exit status 1 if the kernel died."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    read_notebook(path)
    nb = nbformat.read(path, as_version=4)
    todo = exercises(nb)
    os.environ.update(HELPERS_QUICK="1", HELPERS_PROGRESS="0", MPLBACKEND="Agg")
    client = NotebookClient(nb, kernel_name="python3", allow_errors=True, interrupt_on_timeout=True,
                            timeout_func=lambda cell: max(CELL_TIMEOUT_S, cell.metadata.get("timeout_s", 0)),
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    ran, dead = set(), False
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                if cell.cell_type == "code":
                    client.execute_cell(cell, index)
                    ran.add(index)
    except DeadKernelError as err:
        dead = True
        print(f"error: the kernel died ({err}); exercises not yet graded count as failed.", file=sys.stderr)
    counts = {"passed": 0, "failed": 0, "not attempted": 0}
    for index, grade_id, attempted in todo:
        if index not in ran and dead:
            status = "failed"
        elif not attempted:
            status = "not attempted"
        else:
            status = "passed" if index in ran and not failed(nb.cells[index]) else "failed"
        counts[status] += 1
        print(f"{grade_id}: {status}")
    print(f"total: {counts['passed']} passed, {counts['failed']} failed, {counts['not attempted']} not attempted")
    return 1 if dead else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "grade":
        return grade(Path(argv[1]))
    if argv[:1] == ["student"] and len(argv) <= 2:
        write_student_edition(Path(argv[1]) if len(argv) == 2 else REPO / "build" / "student")
        return 0
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
