"""The runner of many trainings (a sweep, a model zoo), in parallel and resumable: one JSON line per run
in ``<results_dir>/<name>.jsonl``, keyed by a hash of configuration and context (data, model, seed)."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import multiprocessing as mp
import os
import sys
import time
import warnings
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from queue import SimpleQueue

import torch
from torch import nn

from helpers.augment import random_affine
from helpers.checkpoint import atomic_write, load_checkpoint, save_checkpoint
from helpers.config import seed_everything, settings
from helpers.data import n_batches
from helpers.models import CIFAR2MLP, MODEL_KINDS, MODEL_VARIANTS, make_model
from helpers.train import check_count, train

SCHEDULES = ("constant", "cosine", "onecycle")
AUGMENTATIONS = ("none", "double", "online")
MODELS = ("model_fn", *MODEL_KINDS)

# One configuration key: its type, default (None: required), range check and valid values in words.
KeySpec = namedtuple("KeySpec", "kind default check valid")
CONFIG_KEYS: dict[str, KeySpec] = {
    "lr": KeySpec(float, None, lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "momentum": KeySpec(float, 0.0, lambda v: 0 <= v < 1, "0 <= momentum < 1"),
    "weight_decay": KeySpec(float, 0.0, lambda v: 0 <= v and math.isfinite(v), "a finite number >= 0"),
    "epochs": KeySpec(int, None, lambda v: v >= 1, "an integer >= 1"),
    "batch_size": KeySpec(int, 128, lambda v: v >= 1, "an integer >= 1"),
    "dampening": KeySpec(float, 0.0, lambda v: 0 <= v <= 1, "0 <= dampening <= 1"),
    "nesterov": KeySpec(bool, False, lambda v: True, "true or false"),
    "schedule": KeySpec(str, "constant", lambda v: v in SCHEDULES, f"one of {SCHEDULES}"),
    "model": KeySpec(str, "model_fn", lambda v: v in MODELS, f"one of {MODELS} ('model_fn': the sweep's model_fn)"),
    "variant": KeySpec(str, "plain", lambda v: v in MODEL_VARIANTS, f"one of {MODEL_VARIANTS}"),
    "n_train": KeySpec(int, 0, lambda v: v >= 0, "0 (the whole training set) or a subset size"),
    "augment": KeySpec(str, "none", lambda v: v in AUGMENTATIONS, f"one of {AUGMENTATIONS}"),
}


def canonical_config(config: Mapping, index: int = 0) -> dict:
    """Validated copy of ``config`` with every key of :data:`CONFIG_KEYS`; ValueError names index, key, value."""
    if not isinstance(config, Mapping):
        raise ValueError(f"config #{index} must be a dict, got {type(config).__name__}: {config!r}.")
    if unknown := sorted(set(config) - set(CONFIG_KEYS)):
        raise ValueError(f"config #{index}: unknown key {unknown[0]!r} (value {config[unknown[0]]!r}); "
                         f"valid keys: {', '.join(CONFIG_KEYS)}.")
    out = {}
    for key, (kind, default, check, valid) in CONFIG_KEYS.items():
        if key not in config and default is None:
            raise ValueError(f"config #{index}: required key {key!r} is missing ({valid}).")
        value = config.get(key, default)
        # A bool is an int in Python: accept one only for a bool key. An int is fine for a float key.
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float) if kind is float else kind):
            raise ValueError(f"config #{index}: {key}={value!r} has the wrong type; expected {kind.__name__} ({valid}).")
        if not check(kind(value)):
            raise ValueError(f"config #{index}: {key}={value!r} is out of range; valid: {valid}.")
        out[key] = kind(value)
    if out["nesterov"] and (out["momentum"] == 0 or out["dampening"] != 0):
        raise ValueError(f"config #{index}: nesterov=True needs momentum > 0 and dampening = 0, got "
                         f"momentum={out['momentum']!r}, dampening={out['dampening']!r}.")
    if out["model"] == "model_fn" and out["variant"] != "plain":
        raise ValueError(f"config #{index}: variant={out['variant']!r} needs a model kind {MODEL_KINDS}.")
    return out


def validate_configs(configs: Iterable[Mapping]) -> list[dict]:
    """Canonical copies of all ``configs``, checked before any training; fails on a bad or duplicate one."""
    canon, seen = [], {}
    for i, config in enumerate(configs):
        canon.append(canonical_config(config, i))
        if (first := seen.setdefault(config_key(canon[-1]), i)) != i:
            raise ValueError(f"config #{i} duplicates config #{first}: {canon[-1]}.")
    if not canon:
        raise ValueError("configs is empty; pass at least one configuration dict.")
    return canon


def config_key(config: Mapping, context: Mapping | None = None) -> str:
    """Stable 16-hex-digit key of the canonical ``config`` (and the run ``context``)."""
    payload = {"config": canonical_config(config), "context": dict(context or {})}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def config_label(config: Mapping) -> str:
    """Short label, e.g. ``lenet/dropout lr=0.1 m=0.9 wd=0.0005 augment=online`` (non-defaults only)."""
    c = canonical_config(config)
    label = f"lr={c['lr']:g} m={c['momentum']:g} wd={c['weight_decay']:g}"
    extras = ("batch_size", "dampening", "nesterov", "schedule", "n_train", "augment")
    label += "".join(f" {k}={c[k]}" for k in extras if c[k] != CONFIG_KEYS[k].default)
    return label if c["model"] == "model_fn" else f"{c['model']}/{c['variant']} {label}"


# (lr, momentum, weight decay) of the course's baselines and their source, as far as known: the solutions
# the first grid was built from, and two settings of the INF265 course reports that it missed.
SOLUTIONS, INF265 = "CIFAR-2 MLP course solutions", "INF265 course reports"
BASELINES: tuple[tuple[tuple[float, float, float], str], ...] = (
    *(((0.01, m, wd), SOLUTIONS) for m in (0.0, 0.9) for wd in (0.0, 0.01)),
    *((t, SOLUTIONS) for t in ((0.005, 0.9, 0.001), (0.02, 0.8, 0.005), (0.01, 0.7, 0.002),
                               (0.015, 0.85, 0.01), (0.008, 0.95, 0.003))),
    *((t, INF265) for t in ((0.01, 0.9, 0.001), (0.01, 0.8, 0.01))),
)


def default_grid(epochs: int) -> list[dict]:
    """The :data:`BASELINES` in order, then an lr x momentum x weight decay grid and two cosine schedules."""
    grid = [{"lr": lr, "momentum": m, "weight_decay": wd} for (lr, m, wd), _report in BASELINES]
    grid += [{"lr": lr, "momentum": m, "weight_decay": wd}
             for lr in (0.003, 0.03, 0.1) for m in (0.9, 0.95) for wd in (0.0, 5e-4)]
    grid += [{"lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
             {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True, "schedule": "cosine"}]
    return [{**c, "epochs": epochs} for c in grid]


def quick_grid(epochs: int = 1) -> list[dict]:
    """Three configurations for quick mode (same code path, smaller grid)."""
    return [{"lr": 0.01, "momentum": m, "weight_decay": wd, "epochs": epochs}
            for m, wd in ((0.0, 0.0), (0.9, 0.0), (0.9, 0.01))]


def zoo_configs(epochs: int, lr: Mapping[str, float], **common) -> list[dict]:
    """Notebook 06's nine models (every kind x variant), ``lr[kind]`` each, ``common`` keys shared."""
    return [{"model": kind, "variant": variant, "lr": lr[kind], "epochs": epochs, **common}
            for kind in MODEL_KINDS for variant in MODEL_VARIANTS]


def default_results_dir() -> Path:
    """``HELPERS_RESULTS_DIR``: by default ``<repo>/results`` (full), ``<repo>/build/quick-results`` (quick),
    both git-ignored, and a fresh temporary folder under a grader."""
    return settings().results_dir


def checkpoint_dir(folder: str | Path, name: str) -> Path:
    """Where a sweep keeps the final weights of each configuration: ``<folder>/<name>-checkpoints``."""
    return Path(folder) / f"{name}-checkpoints"


def append_record(path: Path, record: Mapping) -> None:
    """Append ``record`` as one fsynced JSON line (a crash cuts at most this line: see :func:`load_records`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as f:
        f.write((json.dumps(record, sort_keys=True) + "\n").encode())
        f.flush()
        os.fsync(f.fileno())


def load_records(path: Path) -> list[dict]:
    """All complete records in the JSON-lines file ``path`` ([] if absent); damaged lines: RuntimeWarning, removed."""
    path = Path(path)
    raw = path.read_bytes() if path.exists() else b""
    records, good, damaged = [], [], []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # bad JSON or bad UTF-8
            record = None
        if isinstance(record, dict) and {"key", "config", "history"} <= record.keys():
            records.append(record)
            good.append(line + b"\n")
        else:
            damaged.append(number)
    if damaged:
        warnings.warn(f"{path}: dropped damaged line(s) {damaged} (e.g. cut by an interrupted write); "
                      "their configurations will be trained again.", RuntimeWarning, stacklevel=2)
    if raw and (damaged or not raw.endswith(b"\n")):
        atomic_write(path, lambda f: f.write(b"".join(good)))
    return records


def build_model(config: Mapping, model_fn: Callable[[], nn.Module] | None = None) -> nn.Module:
    """A fresh model: ``make_model(model, variant)`` if the canonical ``config`` names one, else ``model_fn()``."""
    if config["model"] != "model_fn":
        return make_model(config["model"], config["variant"])
    return (model_fn or CIFAR2MLP)()


def training_data(splits, config: Mapping, seed: int):
    """``splits`` with ``config``'s training set: ``n_train`` seeded images (0: all), doubled by ``augment="double"``."""
    c = canonical_config(config)
    x, y = splits.train.x, splits.train.y
    if c["n_train"]:
        keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:c["n_train"]].sort().values
        x, y = x[keep], y[keep]
    if c["augment"] == "double":
        g = torch.Generator().manual_seed(seed)
        x = torch.cat([x, *(random_affine(part, g) for part in x.split(4096))])
        y = torch.cat([y, y])
    return replace(splits, train=replace(splits.train, x=x, y=y))


def train_config(model: nn.Module, splits, config: Mapping, seed: int) -> dict:
    """Default ``train_fn`` of :func:`sweep`: SGD and ``helpers.train.train`` as ``config`` says; the history."""
    c = canonical_config(config)
    splits = training_data(splits, c, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], dampening=c["dampening"],
                                weight_decay=c["weight_decay"], nesterov=c["nesterov"])
    scheduler, step = None, "epoch"
    if c["schedule"] == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c["epochs"])
    elif c["schedule"] == "onecycle":
        steps = c["epochs"] * n_batches(splits.train, c["batch_size"])
        scheduler, step = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=c["lr"], total_steps=steps,
                                                              pct_start=0.3, cycle_momentum=False), "batch"
    g = torch.Generator().manual_seed(seed)  # "online": a fresh shift and rotation per image and epoch
    return train(model, splits, optimizer, epochs=c["epochs"], batch_size=c["batch_size"], seed=seed,
                 scheduler=scheduler, step_scheduler=step, progress=False,
                 augment=(lambda x: random_affine(x, g)) if c["augment"] == "online" else None)


TrainFn = Callable[[nn.Module, object, dict, int], Mapping]
# What every worker needs, sent once per worker (data tensors go through shared memory). ``inits`` and
# ``contexts`` map a model name ("lenet/dropout", "model_fn") to its initial state_dict and run context.
_Job = namedtuple("_Job", "splits model_fn inits contexts train_fn seed threads checkpoint_dir",
                  defaults=(1, None))
_WORKER_JOB: _Job | None = None  # the job of this worker process, set by _init_worker


def _model_name(config: Mapping) -> str:
    return "model_fn" if config["model"] == "model_fn" else f"{config['model']}/{config['variant']}"


def _make_job(splits, model_fn, seed, train_fn, configs: list[dict]) -> _Job:
    """Data, seed and the initial weights of each model in ``configs`` (each drawn once from ``seed``)."""
    seed = settings().seed if seed is None else int(seed)
    h = hashlib.sha256()  # of the train and validation tensors: catches any change of data
    for name in ("train", "val"):
        for t in (getattr(splits, name).x, getattr(splits, name).y):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).reshape(-1).numpy().data if t.numel() else b"")
    fingerprint, inits, contexts = h.hexdigest()[:16], {}, {}
    for c in configs:
        name = _model_name(c)
        if name not in inits:
            seed_everything(seed)
            model = build_model(c, model_fn)
            inits[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            n_params = sum(p.numel() for p in model.parameters())
            contexts[name] = {"dataset": getattr(splits, "dataset", None), "data": getattr(splits, "source", None),
                              "sizes": [len(splits.train), len(splits.val)], "fingerprint": fingerprint,
                              "seed": seed, "model": f"{type(model).__name__}({n_params} parameters)"}
    return _Job(splits, model_fn, inits, contexts, train_fn or train_config, seed)


def _trained(job: _Job, config: dict) -> tuple[nn.Module, dict]:
    """The model of ``config`` trained from its shared initial weights, and its history."""
    seed_everything(job.seed)
    model = build_model(config, job.model_fn)
    model.load_state_dict(job.inits[_model_name(config)])
    history = job.train_fn(model, job.splits, config, job.seed)
    return model, {k: [float(v) for v in vals] for k, vals in dict(history).items()}


def _run_config(job: _Job, key: str, config: dict) -> dict:
    start = time.perf_counter()
    model, history = _trained(job, config)
    seconds = time.perf_counter() - start
    metrics = ("train_loss", "train_acc", "val_loss", "val_acc")
    if missing := sorted(set(metrics) - history.keys()):
        raise ValueError(f"train function returned a history without {missing}.")
    checkpoint = save_checkpoint(model, job.checkpoint_dir / f"{key}.pt").name if job.checkpoint_dir else None
    return {"key": key, "config": config, "label": config_label(config), "history": history,
            "final": {k: history[k][-1] for k in metrics}, "seconds": seconds, "threads": job.threads,
            "context": job.contexts[_model_name(config)], "checkpoint": checkpoint}


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB
    torch.set_num_threads(job.threads)
    _WORKER_JOB = job


def _run_in_worker(task: tuple[str, dict]) -> dict:
    return _run_config(_WORKER_JOB, *task)


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def sweep(configs: Sequence[Mapping], splits, model_fn: Callable[[], nn.Module] | None = None, *,
          name: str = "sweep", results_dir: str | Path | None = None, workers: int | None = None,
          threads_per_worker: int | None = None, seed: int | None = None, train_fn: TrainFn | None = None,
          save_checkpoints: bool = True, progress: Callable[[str], None] | None = print) -> list[dict]:
    """Train one model per configuration (all validated first); returns one record each, in order:
    ``key``, ``config``, ``label``, ``history``, ``final`` (last epoch), ``seconds``, ``threads``, ``context``,
    ``checkpoint`` (file name in ``<results_dir>/<name>-checkpoints``). ``model_fn``: the (picklable) network
    of configurations naming no ``model``; ``workers``: processes (1 runs here), ``threads_per_worker`` each;
    ``train_fn(model, splits, config, seed)`` returns the history (default :func:`train_config`)."""
    canon = validate_configs(configs)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"sweep name {name!r} must be a plain file stem like '04_sweep'.")
    job = _make_job(splits, model_fn, seed, train_fn, canon)
    keys = [config_key(c, job.contexts[_model_name(c)]) for c in canon]
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    path = folder / f"{name}.jsonl"
    done = {r["key"]: r for r in load_records(path)}
    pending = [(k, c) for k, c in zip(keys, canon) if k not in done]
    say = progress or (lambda _msg: None)
    say(f"sweep {name!r}: {len(canon)} configs, {len(canon) - len(pending)} already in {path}, "
        f"{len(pending)} to train")
    workers = check_count("workers", workers if workers is not None else default_workers())
    # Threads follow the requested workers, not the pending count: a resumed sweep keeps its thread count.
    threads = threads_per_worker if threads_per_worker is not None else max(1, default_workers() // workers)
    job = job._replace(threads=check_count("threads_per_worker", threads),
                       checkpoint_dir=checkpoint_dir(folder, name) if save_checkpoints else None)
    for record in _execute(job, pending, max(1, min(workers, len(pending)))):
        append_record(path, record)
        done[record["key"]] = record
        f = record["final"]
        say(f"  [{len(done)}/{len(canon)}] {record['label']}: val_acc={f['val_acc']:.4f} "
            f"val_loss={f['val_loss']:.4f} ({record['seconds']:.1f} s, {job.threads} thread(s))")
    return [done[k] for k in keys]


def _execute(job: _Job, pending: list, workers: int):
    """Yield records as configurations finish. With ``workers > 1`` this process trains too,
    beside ``workers - 1`` worker processes (so no time is lost while they start), longest first."""
    finished, pool = SimpleQueue(), None
    if workers > 1:
        _check_main_guard(workers)
        pending = sorted(pending, key=lambda task: -_expected_seconds(job, task[1]))  # packs best
        # Workers fork from a 'forkserver' that has imported torch once (torch._dynamo: the first optimizer of
        # a process imports it, seconds); never plain 'fork', which can deadlock a running torch thread pool.
        context = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        if context.get_start_method() == "forkserver":
            context.set_forkserver_preload(["helpers.sweep", "torch._dynamo"])
        # A pool that fails as a whole (BrokenProcessPool) when a worker dies, never respawns it.
        pool = ProcessPoolExecutor(workers - 1, mp_context=context, initializer=_init_worker, initargs=(job,))
    # This thread and the pool's share the tasks: next() on a list iterator is atomic (the GIL).
    tasks = iter(pending)

    def feed(future=None):  # in the pool's thread when a worker is done: pass its result on, give it the next task
        if future is not None:
            finished.put(future)
            if future.cancelled() or future.exception() is not None:
                return
        if (task := next(tasks, None)) is not None:
            pool.submit(_run_in_worker, task).add_done_callback(feed)

    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        task = next(tasks, None)  # this process starts the longest configuration at once,
        for _ in range(workers - 1):
            feed()  # the workers take the next ones as soon as they are up
        for _ in range(len(pending)):
            if task is None or not finished.empty():
                yield finished.get().result()  # a worker's record (waits for one if need be)
            else:
                yield _run_config(job, *task)
                task = next(tasks, None)
    except BaseException:  # an error, Ctrl-C or an abandoned generator: stop the workers now
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        raise
    finally:
        torch.set_num_threads(previous)
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _expected_seconds(job: _Job, config: dict) -> float:
    """Rough cost, only to order the work: one timed step of the model on one batch, times the run's steps."""
    model = build_model(config, job.model_fn)
    x, y = job.splits.train.x[:config["batch_size"]], job.splits.train.y[:config["batch_size"]]
    for _ in range(2):  # the first step pays one-time costs
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
    n = config["n_train"] or len(job.splits.train)
    return (time.perf_counter() - start) * config["epochs"] * n * (2 if config["augment"] == "double" else 1)


def _check_main_guard(workers: int) -> None:
    """Fail if a script's top-level code starts workers outside ``if __name__ == "__main__":``."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    frame = sys._getframe()
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if not path or frame is None or not os.path.isfile(path):  # Jupyter, python -c, the REPL
        return
    guards = ('__name__ == "__main__"', '"__main__" == __name__')
    if not any(isinstance(node, ast.If) and ast.unparse(node.test).replace("'", '"') in guards
               and node.body[0].lineno <= frame.f_lineno <= node.end_lineno
               for node in ast.walk(ast.parse(Path(path).read_text()))):
        raise RuntimeError(f"{path}, line {frame.f_lineno}: starts {workers} worker processes outside "
                           "`if __name__ == \"__main__\":`; each worker imports this script and would start "
                           "the run again. Fix: put that code under `if __name__ == \"__main__\":` (or workers=1).")


def selected_model(record: Mapping, splits, model_fn: Callable[[], nn.Module] | None = None, *,
                   name: str = "sweep", results_dir: str | Path | None = None, seed: int | None = None,
                   train_fn: TrainFn | None = None) -> tuple[nn.Module, str]:
    """``(model, "checkpoint")`` for a sweep ``record``, else ``(model, "retrained")`` (the same weights)."""
    config = canonical_config(record["config"])
    job = _make_job(splits, model_fn, seed, train_fn, [config])
    if config_key(config, job.contexts[_model_name(config)]) != record["key"]:
        raise ValueError(f"record {record['key']} was made with other data, model or seed "
                         f"({record.get('context')}); pass the sweep's splits, model_fn and seed.")
    path = checkpoint_dir(default_results_dir() if results_dir is None else results_dir, name) / f"{record['key']}.pt"
    if path.is_file():
        return load_checkpoint(build_model(config, model_fn), path), "checkpoint"
    previous = torch.get_num_threads()
    torch.set_num_threads(int(record.get("threads", 1)))
    try:
        return _trained(job, config)[0], "retrained"
    finally:
        torch.set_num_threads(previous)


def sort_results(results: Sequence[Mapping]) -> list[dict]:
    """Records best first: highest final val_acc, then lowest val_loss; a NaN or None (diverged) ranks last."""
    def rank(record):
        acc, loss = record["final"]["val_acc"], record["final"]["val_loss"]
        bad = lambda v: v is None or math.isnan(v)  # noqa: E731
        return (math.inf if bad(acc) else -acc, math.inf if bad(loss) else loss)
    return sorted(results, key=rank)


def select_best(results: Sequence[Mapping]) -> dict:
    """The first record of :func:`sort_results`."""
    if not results:
        raise ValueError("select_best got no results; run sweep() first.")
    return sort_results(results)[0]


def results_table(results: Sequence[Mapping]) -> str:
    """Plain-text table of ``results``, best first: rank, configuration, final metrics, gap, time."""
    header = f"{'#':>3}  {'configuration':<52} {'val_acc':>8} {'val_loss':>9} {'train_acc':>9} {'gap':>7} {'time_s':>7}"
    rows = [header, "-" * len(header)]
    for rank, r in enumerate(sort_results(results), start=1):
        f = r["final"]
        rows.append(f"{rank:>3}  {r['label']:<52} {f['val_acc']:>8.4f} {f['val_loss']:>9.4f} "
                    f"{f['train_acc']:>9.4f} {f['train_acc'] - f['val_acc']:>+7.4f} {r['seconds']:>7.1f}")
    return "\n".join(rows)
