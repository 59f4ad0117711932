"""Defs-only import of a notebook: ``load_defs("02_manual_backprop_mlp")`` runs, in order, only the top-level
imports, ``def``, ``class`` and ALL_CAPS assignments of its code cells (training, plots, prints are skipped)."""

import ast
import json
import sys
import types
from pathlib import Path

from helpers.config import REPO_ROOT

NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
_KEPT = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def notebook_path(name: str | Path) -> Path:
    """``"01_matrix_chain_backprop"`` (or a path) -> the ``.ipynb`` file; FileNotFoundError if absent."""
    path = Path(name)
    if path.suffix != ".ipynb":
        path = NOTEBOOKS_DIR / f"{name}.ipynb"
    if not path.is_file():
        found = ", ".join(sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.ipynb")))
        raise FileNotFoundError(f"no notebook {path}; notebooks in {NOTEBOOKS_DIR}: {found}.")
    return path


def _cell_definitions(source: str) -> list[tuple[str, bool]]:
    """(source, is_assignment) of each defining top-level statement of one cell, decorators included."""
    lines, out = source.splitlines(), []
    for node in ast.parse(source).body:
        assignment = isinstance(node, ast.Assign | ast.AnnAssign)
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if isinstance(node, _KEPT) or (assignment and all(isinstance(t, ast.Name) and t.id.isupper() for t in targets)):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            out.append(("\n".join(lines[first - 1:node.end_lineno]), assignment))
    return out


def load_defs(name: str | Path) -> types.ModuleType:
    """Import the definitions of a notebook as a module ``nb_<stem>`` (cached in sys.modules). An ALL_CAPS
    assignment that needs a value of a skipped statement (NameError) is left out and listed in ``__skipped__``."""
    path = notebook_path(name)
    module_name = "nb_" + path.stem.replace("-", "_")
    cached = sys.modules.get(module_name)
    if cached is not None and getattr(cached, "__file__", None) == str(path):
        return cached
    nb = json.loads(path.read_text(encoding="utf-8"))
    module = types.ModuleType(module_name)
    module.__file__ = str(path)
    module.__skipped__ = []
    sys.modules[module_name] = module  # classes defined here must be importable by name (pickle)
    try:
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            source = "\n".join(ln for ln in "".join(cell["source"]).splitlines()
                               if not ln.lstrip().startswith(("%", "!")))
            try:
                chunks = _cell_definitions(source)
            except SyntaxError as err:
                raise SyntaxError(f"{path}: code cell {i} does not parse: {err}") from err
            for chunk, is_assignment in chunks:
                try:
                    exec(compile(chunk, f"{path.name} (code cell {i})", "exec"), module.__dict__)
                except NameError:
                    if not is_assignment:
                        raise
                    module.__skipped__.append(chunk.split("=")[0].strip())
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
