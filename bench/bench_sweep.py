"""Sweep wall time: serial versus parallel workers, and the study-backed runner versus the old one.

    .venv/bin/python bench/bench_sweep.py                 # 6 configs x 2 epochs, 2 rounds (a few minutes)
    .venv/bin/python bench/bench_sweep.py --full --rounds 1   # the whole default grid at full size

Three ways to run the same configurations on CIFAR-2 (full size; the synthetic stand-in where
CIFAR-10 is missing), each into a fresh results folder so nothing is skipped:

- ``serial, N threads``: one process, one configuration after another, torch using all N cores
  (what a plain loop over configurations does);
- ``serial, 1 thread``: the same with one thread: the reference the parallel results must equal;
- ``parallel``: ``workers`` processes (default one per core), one thread each;
- ``old runner``: the same, through the runner before the Optuna study (a process pool and a JSON-lines file),
  read from git (``git show 6a4a003:helpers/sweep.py``) into a temporary module at bench time.

Rounds are interleaved (serial, parallel, serial, ...) so that load from other processes
hits every variant alike; the load average is printed before and after. Parallel times
include starting the workers. The script checks that parallel and 1-thread serial
histories are exactly equal (and the old runner's too) and prints the speed-ups and the ratio of the study-backed
runner's wall time to the old runner's (target: <= 1.1).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.data import load_cifar2  # noqa: E402
from helpers.models import CIFAR2MLP  # noqa: E402
from helpers.sweep import default_grid, default_workers, sweep  # noqa: E402

OLD_COMMIT = "6a4a003"  # the last runner before the Optuna study


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", type=int, default=6, help="configurations, spread over the default grid")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--full", action="store_true", help="the whole default grid, 15 epochs (the notebook's run)")
    p.add_argument("--workers", type=int, default=None, help="default: one per core")
    p.add_argument("--skip-multithread-serial", action="store_true",
                   help="leave out 'serial, N threads' (it can be very slow when other processes load the cores)")
    return p.parse_args()


def pick_configs(n: int, epochs: int) -> list[dict]:
    """``n`` configurations spread evenly over the default grid (all of it if n >= its size)."""
    grid = default_grid(epochs)
    if n >= len(grid):
        return grid
    step = len(grid) / n
    return [grid[int(i * step)] for i in range(n)]


def old_sweep():
    """``sweep`` of helpers/sweep.py at OLD_COMMIT, as an importable module in a temporary folder (its worker
    processes import it by name)."""
    source = subprocess.check_output(["git", "show", f"{OLD_COMMIT}:helpers/sweep.py"],
                                     cwd=Path(__file__).resolve().parents[1])
    folder = Path(tempfile.mkdtemp(prefix="bench_old_runner_"))
    (folder / f"old_sweep_{OLD_COMMIT}.py").write_bytes(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module(f"old_sweep_{OLD_COMMIT}").sweep


def timed_sweep(configs, splits, workers: int, threads: int, run=sweep) -> tuple[float, list[dict]]:
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as folder:
        start = time.perf_counter()
        results = run(configs, splits, CIFAR2MLP, name="bench", results_dir=folder, workers=workers,
                      threads_per_worker=threads, progress=None)
        return time.perf_counter() - start, results


def histories(results: list[dict]) -> list[dict]:
    keys = ("train_loss", "train_acc", "val_loss", "val_acc")
    return [{k: r["history"][k] for k in keys} for r in results]


def main() -> None:
    args = parse_args()
    cores = default_workers()
    workers = args.workers or cores
    configs = default_grid(15) if args.full else pick_configs(args.configs, args.epochs)
    splits = load_cifar2(quick=False)
    epochs = sum(c["epochs"] for c in configs)
    print(f"data: {splits.source}, train={len(splits.train)} val={len(splits.val)}")
    print(f"{len(configs)} configurations, {epochs} epochs in all; {cores} cores; parallel: {workers} workers x 1 thread")
    print(f"load average before: {os.getloadavg()}")
    old = f"old runner ({OLD_COMMIT}), {workers} x 1"
    variants = {f"serial, {cores} threads": (1, cores), "serial, 1 thread": (1, 1), f"parallel, {workers} x 1": (workers, 1),
                old: (workers, 1, old_sweep())}
    if args.skip_multithread_serial:
        del variants[f"serial, {cores} threads"]
    times: dict[str, list[float]] = {v: [] for v in variants}
    outputs: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            seconds, results = timed_sweep(configs, splits, *variants[name])
            times[name].append(seconds)
            outputs[name] = histories(results)
            print(f"  round {r + 1}: {name:<22} {seconds:8.1f} s", flush=True)
    print(f"load average after: {os.getloadavg()}")
    par, ser1, serN = (f"parallel, {workers} x 1", "serial, 1 thread", f"serial, {cores} threads")
    same = json.dumps(outputs[par]) == json.dumps(outputs[ser1])  # exact, and NaN-safe for diverged runs
    print("parallel histories equal the 1-thread serial ones exactly:", same)
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in med.items():
        print(f"median {name:<22} {t:8.1f} s  ({t / epochs:.2f} s per epoch)")
    if serN in med:
        print(f"speed-up parallel vs serial ({cores} threads): {med[serN] / med[par]:.2f}x")
    print(f"speed-up parallel vs serial (1 thread):  {med[ser1] / med[par]:.2f}x")
    print("old runner's histories equal the 1-thread serial ones exactly:", json.dumps(outputs[old]) == json.dumps(outputs[ser1]))
    print(f"study-backed runner / old runner, wall time ({workers} workers): {med[par] / med[old]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
