"""Re-execute notebooks and keep only the outputs that nbval checks.

Usage (what `make notebooks` runs, in quick offline mode):
    HELPERS_QUICK=1 HELPERS_DATA_SOURCE=offline python scripts/refresh_notebooks.py notebooks/0*.ipynb

A committed notebook carries outputs only in cells marked ``# NBVAL_CHECK_OUTPUT``:
mode-independent invariants (shapes, parameter counts, pass/fail of a check). All
other outputs are cleared, so no quick-mode number is shown as if it were a result.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

MARK = "NBVAL_CHECK_OUTPUT"


def refresh(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    kept = 0
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        cell.metadata.pop("execution", None)
        if MARK in cell.source:
            kept += 1
            # nbval fails a reference cell that has outputs but no execution count
            # ("Unrun reference cell has outputs"), so checked cells get a fixed number.
            cell.execution_count = number
            for out in cell.outputs:
                if "execution_count" in out:
                    out["execution_count"] = number
        else:
            cell.execution_count = None
            cell.outputs = []
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)
    print(f"{path}: executed, kept outputs of {kept} checked cell(s)")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        refresh(Path(arg))
