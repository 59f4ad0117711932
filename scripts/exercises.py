"""The exercises, through nbgrader: the student edition and the grader.

    python scripts/exercises.py student [OUT]      # what `make student` runs (OUT: build/student)
    python scripts/exercises.py grade NOTEBOOK     # what `make grade NB=...` runs

`grade` prints one line per exercise and per written answer, then a total; it exits 0 when every
auto-graded exercise passed, 1 when any did not, 2 on a usage error.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]  # the repository, or the student edition
EDITION_FILES = ("helpers", "bench", "pyproject.toml", "environment.yml", "nbgrader_config.py", "scripts/exercises.py")


def write_student_edition(out: Path) -> None:
    """``out``/notebooks: nbgrader's release; ``out``/released: the same, the grader's reference; plus
    helpers, bench, the environment files, the nbgrader settings, this script, and edition/'s Makefile and
    README."""
    from helpers.course import release

    if out.exists():
        shutil.rmtree(out)
    notebooks = release(sorted((HERE / "notebooks").glob("0*.ipynb")), out / "notebooks")
    shutil.copytree(out / "notebooks", out / "released")
    for name in EDITION_FILES:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (HERE / name).is_dir() else shutil.copy2
        copy(HERE / name, out / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is
                                           shutil.copytree else {}))
    for name in ("Makefile", "README.md"):
        shutil.copy2(HERE / "edition" / name, out / name)
    print(f"student edition: {out}/ ({len(notebooks)} notebooks)")


def grade(path: Path) -> int:
    from helpers.course import autograde, summary

    edition = (HERE / "released").is_dir()
    sources = sorted((HERE / ("released" if edition else "notebooks")).glob("0*.ipynb"))
    results, error, _ = autograde(path, sources, keep_stubs=edition)
    if error:
        print(f"nbgrader: {error}")
    for result in sorted(results, key=lambda r: not r.points):  # exercises, then written answers
        print(result.line())
    print(summary(results, visible_only=edition))
    return 0 if all(r.status == "passed" for r in results if r.points) else 1


def main(argv: list[str]) -> int:
    from helpers.course import UsageError

    try:
        if len(argv) == 2 and argv[0] == "grade":
            return grade(Path(argv[1]))
        if argv[:1] == ["student"] and len(argv) <= 2:
            write_student_edition(Path(argv[1]) if len(argv) == 2 else HERE / "build" / "student")
            return 0
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(__doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
