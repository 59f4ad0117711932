"""`make report`: build/executed/*.ipynb as HTML and the headline numbers of their run records
(figures/ or, for a quick run, build/quick-figures/; as helpers.config picks) as tables in build/report/.
Every table has a data-source column, so a stand-in result cannot pass for a real one.
"""

import html
import json
import os
import re
import sys
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXECUTED, OUT = REPO / "build" / "executed", REPO / "build" / "report"
HEADLINE = re.compile(r"acc|accuracy|error|loss|gap|seconds|time|ratio|_s$")  # paths worth a row
SKIP = {"settings", "versions", "config", "data", "data_record"}  # top-level keys that hold no results


def fail(message: str) -> None:
    sys.exit(f"make report: {message}\n  fix: run `make run` first (`HELPERS_QUICK=1 make run` for a quick run).")


def figures_dir(notebooks: list[Path]) -> Path:
    """The folder helpers.config picks for the run's mode."""
    sys.path.insert(0, str(REPO))
    from helpers.config import read_settings

    env = dict(os.environ)
    if not env.get("HELPERS_QUICK", "").strip():
        env["HELPERS_QUICK"] = "1" if "mode=quick" in notebooks[0].read_text() else "0"
    return read_settings(env).figures_dir


def ran_during(record: Path, nb: dict) -> bool:
    """Whether ``record`` was written while ``nb`` executed (by nbclient's cell timestamps; True if none)."""
    stamps = [datetime.fromisoformat(t).timestamp() for c in nb["cells"]
              for t in c.get("metadata", {}).get("execution", {}).values()]
    return not stamps or min(stamps) - 1 <= record.stat().st_mtime <= max(stamps) + 1


def headline(record: dict, path: str = "") -> list[tuple[str, float]]:
    """(path, value) of numeric leaves named like results, in dicts and short lists of dicts (not histories)."""
    rows = []
    for key, value in record.items():
        name = f"{path}.{key}" if path else str(key)
        if not path and key in SKIP:
            continue
        if isinstance(value, list) and len(value) <= 6 and all(isinstance(v, dict) for v in value):
            value = {f"[{i}]": v for i, v in enumerate(value)}
        if isinstance(value, dict) and value:
            rows += headline(value, name)
        elif isinstance(value, int | float) and not isinstance(value, bool) and HEADLINE.search(name):
            rows.append((name.replace(".[", "["), value))
    return rows


def data_source(record: dict) -> str:
    """The record's ``data_source`` or ``data`` string, else the first nested ``data_source``."""
    found = [record.get("data_source"), record.get("data")]
    found += [v.get("data_source") for v in record.values() if isinstance(v, dict)]
    return next((f for f in found if isinstance(f, str)), "not recorded")


def tex(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "^": r"\^{}", "~": r"\~{}"}
    return re.sub(r"([_%&#$\\{}^~])", lambda m: special.get(m.group(1), "\\" + m.group(1)), text)


def main() -> None:
    notebooks = sorted(EXECUTED.glob("0*.ipynb"))
    if not notebooks:
        fail(f"no executed notebooks in {EXECUTED}")
    records_dir = figures_dir(notebooks)
    records = sorted(records_dir.glob("0*.json"))
    if not records:
        fail(f"no run records (NN_*.json) in {records_dir}")
    from nbconvert import HTMLExporter

    OUT.mkdir(parents=True, exist_ok=True)
    md = [f"# Results\n\nRun records from `{records_dir}`; executed notebooks from `{EXECUTED}`.\n"]
    latex, links = ["% \\input{results.tex} from a LaTeX document: one table per notebook"], []
    for path in notebooks:
        nb = json.loads(path.read_text())
        body, _ = HTMLExporter().from_filename(str(path))  # figures inline, as data: URIs
        (OUT / f"{path.stem}.html").write_text(body, encoding="utf-8")
        links.append(f'<li><a href="{path.stem}.html">{html.escape(path.stem)}</a></li>')
        ours = [(r.stem, json.loads(r.read_text())) for r in records if r.name[:2] == path.name[:2] and ran_during(r, nb)]
        rows = [(stem, name, value, data_source(r)) for stem, r in ours for name, value in headline(r)]
        if not rows:
            continue
        md += [f"## {path.stem}\n", "| record | quantity | value | data source |", "|---|---|---:|---|"]
        md += ["| " + " | ".join(c.replace("|", "\\|") for c in (r, q, f"{v:.4g}", s)) + " |" for r, q, v, s in rows]
        md.append("")
        latex += ["\n\\begin{table}[htbp]\\centering\\small\n\\begin{tabular}{llrp{5.5cm}}\\hline",
                  r"record & quantity & value & data source \\ \hline"]
        latex += [f"{tex(r)} & {tex(q)} & {v:.4g} & {tex(s)} \\\\" for r, q, v, s in rows]
        latex += [r"\hline\end{tabular}", f"\\caption{{Headline numbers of {tex(path.stem)}.}}\n\\end{{table}}"]
    (OUT / "results.md").write_text("\n".join(md), encoding="utf-8")
    (OUT / "results.tex").write_text("\n".join(latex) + "\n", encoding="utf-8")
    (OUT / "index.html").write_text(
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Backprop series: report</title></head><body>\n'
        "<h1>Executed notebooks</h1>\n<ul>\n" + "\n".join(links) + '\n</ul>\n<p>Headline numbers: <a href='
        '"results.md">results.md</a>, <a href="results.tex">results.tex</a>.</p>\n</body></html>\n', encoding="utf-8")
    print(f"report: {len(notebooks)} notebooks, run records from {records_dir} -> {OUT}/index.html")


if __name__ == "__main__":
    main()
