"""Notebook 06's nine models through the runner: serial at 1 thread against 2 workers x 1 thread.

    .venv/bin/python bench/bench_zoo.py                # the notebook's configuration (full size)
    .venv/bin/python bench/bench_zoo.py --epochs 1     # a shorter check

The nine configurations are the notebook's own (its ``ZOO_CONFIGS`` if it defines them, else built
from its ``CONFIG`` with ``helpers.sweep.zoo_configs``), read with a defs-only import. The data is
whatever ``helpers.data.load_dataset`` gives here (real MNIST, or a stand-in: the source is printed).
Both runs happen in this process, each into a fresh results folder; the script prints the serial
time, the parallel time (worker start included), their ratio, and whether every trained parameter
is equal (``torch.equal``) between the two.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from helpers.data import load_dataset  # noqa: E402
from helpers.notebook import load_defs  # noqa: E402
from helpers.sweep import sweep, zoo_configs  # noqa: E402


def notebook_configs() -> tuple[str, list[dict]]:
    """(dataset, the nine configurations) as notebook 06 defines them."""
    nb = load_defs("06_mnist_model_zoo")
    config = nb.CONFIG
    if hasattr(nb, "ZOO_CONFIGS"):
        return config.get("dataset", "mnist"), list(nb.ZOO_CONFIGS)
    return config.get("dataset", "mnist"), zoo_configs(
        config["epochs"], config["peak_lr"], batch_size=config["batch_size"], momentum=config["momentum"],
        nesterov=config["nesterov"], weight_decay=config["weight_decay"], schedule="onecycle")


def timed(configs, splits, folder: str, workers: int) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    records = sweep(configs, splits, name="zoo", results_dir=folder, workers=workers, threads_per_worker=1,
                    progress=None)
    return time.perf_counter() - start, records


def same_weights(folder_a: str, folder_b: str, records_a, records_b) -> bool:
    for a, b in zip(records_a, records_b):
        wa = torch.load(Path(folder_a) / "zoo-checkpoints" / a["checkpoint"], weights_only=True)
        wb = torch.load(Path(folder_b) / "zoo-checkpoints" / b["checkpoint"], weights_only=True)
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help="override the notebook's epochs")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    dataset, configs = notebook_configs()
    if args.epochs:
        configs = [{**c, "epochs": args.epochs} for c in configs]
    splits = load_dataset(dataset)
    print(f"data: {splits.source} (train={len(splits.train)}, val={len(splits.val)})")
    print(f"{len(configs)} models, {configs[0]['epochs']} epochs each; {os.cpu_count()} CPUs visible, "
          f"affinity {len(os.sched_getaffinity(0))}; load average before {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as serial_dir, tempfile.TemporaryDirectory() as parallel_dir:
        t_serial, serial = timed(configs, splits, serial_dir, workers=1)
        print(f"serial, 1 process x 1 thread: {t_serial:7.1f} s", flush=True)
        t_parallel, parallel = timed(configs, splits, parallel_dir, workers=args.workers)
        print(f"parallel, {args.workers} workers x 1 thread: {t_parallel:7.1f} s", flush=True)
        equal = same_weights(serial_dir, parallel_dir, serial, parallel)
    print(f"load average after {os.getloadavg()}")
    print(f"{'model':<74} {'serial':>7} {'parallel':>9}")
    for r, q in zip(serial, parallel):
        print(f"  {r['label']:<72} {r['seconds']:6.1f}s {q['seconds']:8.1f}s  val_acc {r['final']['val_acc']:.4f}")
    busy = sum(q["seconds"] for q in parallel)
    print(f"training time summed over models: serial {sum(r['seconds'] for r in serial):.1f} s, parallel {busy:.1f} s "
          f"(ideal parallel wall time {busy / args.workers:.1f} s; the rest is starting workers and packing)")
    print(f"speed-up parallel vs serial: {t_serial / t_parallel:.2f}x")
    print(f"every parameter equal (torch.equal) in both runs: {equal}")


if __name__ == "__main__":
    main()
