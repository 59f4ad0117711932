"""Hyperparameter sweeps: validated configurations, resumable results, a worker pool.

A configuration is a plain dict, e.g. ``{"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0,
"epochs": 20}``; see :data:`CONFIG_KEYS` for every key, its default and its valid range.
:func:`sweep` trains one model per configuration and appends each finished one as one
JSON line to ``<results_dir>/<name>.jsonl``:

- every configuration starts from the same initial weights (one state_dict built from
  ``seed``) and sees the same batches in the same order (``helpers.train.train`` with ``seed``);
- a line is keyed by a hash of the canonical configuration together with the run context
  (data set, data source, split sizes, model, seed), so a rerun skips what is done and
  results from other data never count as done;
- each line is written with one ``os.write`` on an ``O_APPEND`` descriptor and fsynced,
  so a finished configuration is either fully in the file or not at all; a line that does
  not parse (e.g. cut by a crash mid-write) is reported with ``warnings.warn``, dropped
  from the file and its configuration is trained again;
- configurations run in worker processes (``forkserver``, or ``spawn`` where there is
  none), one per core by default, each with ``torch.set_num_threads(threads_per_worker)``;
  a serial run (``workers=1``) with the same thread count gives identical numbers.

Results live in ``<repo>/results/`` by default, ``<repo>/build/quick-results/`` in quick
mode (:func:`default_results_dir`; both git-ignored); the final weights of each
configuration in ``<results_dir>/<name>-checkpoints/<key>.pt``.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from helpers.config import REPO_ROOT, seed_everything, settings

SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class KeySpec:
    """One configuration key: its type, default (``None``: required) and range check."""

    kind: type
    default: object
    check: Callable[[object], bool]
    valid: str


CONFIG_KEYS: dict[str, KeySpec] = {
    "lr": KeySpec(float, None, lambda v: v > 0 and math.isfinite(v), "a finite number > 0"),
    "momentum": KeySpec(float, 0.0, lambda v: 0 <= v < 1, "0 <= momentum < 1"),
    "weight_decay": KeySpec(float, 0.0, lambda v: 0 <= v and math.isfinite(v), "a finite number >= 0"),
    "epochs": KeySpec(int, None, lambda v: v >= 1, "an integer >= 1"),
    "batch_size": KeySpec(int, 128, lambda v: v >= 1, "an integer >= 1"),
    "dampening": KeySpec(float, 0.0, lambda v: 0 <= v <= 1, "0 <= dampening <= 1"),
    "nesterov": KeySpec(bool, False, lambda v: True, "true or false"),
    "schedule": KeySpec(str, "constant", lambda v: v in SCHEDULES, f"one of {SCHEDULES}"),
}


# --------------------------------------------------------------------------- configurations


def _coerce(index: int, key: str, value, spec: KeySpec):
    """``value`` as ``spec.kind`` (ints accepted for floats); ValueError naming key and value."""
    where = f"config #{index}: {key}={value!r}"
    if spec.kind is bool:
        ok = isinstance(value, bool)
    elif spec.kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif spec.kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, spec.kind)
    if not ok:
        raise ValueError(f"{where} has the wrong type; expected {spec.kind.__name__} ({spec.valid}).")
    value = spec.kind(value)
    if not spec.check(value):
        raise ValueError(f"{where} is out of range; valid: {spec.valid}.")
    return value


def canonical_config(config: Mapping, index: int = 0) -> dict:
    """Validated copy of ``config`` with every key of :data:`CONFIG_KEYS` filled in.

    Raises ValueError naming the configuration index, the bad key and its value.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config #{index} must be a dict, got {type(config).__name__}: {config!r}.")
    unknown = sorted(set(config) - set(CONFIG_KEYS))
    if unknown:
        key = unknown[0]
        raise ValueError(f"config #{index}: unknown key {key!r} (value {config[key]!r}); "
                         f"valid keys: {', '.join(CONFIG_KEYS)}.")
    out = {}
    for key, spec in CONFIG_KEYS.items():
        if key not in config:
            if spec.default is None:
                raise ValueError(f"config #{index}: required key {key!r} is missing ({spec.valid}).")
            out[key] = spec.default
        else:
            out[key] = _coerce(index, key, config[key], spec)
    if out["nesterov"] and (out["momentum"] == 0 or out["dampening"] != 0):
        raise ValueError(f"config #{index}: nesterov=True needs momentum > 0 and dampening = 0, got "
                         f"momentum={out['momentum']!r}, dampening={out['dampening']!r}.")
    return out


def validate_configs(configs: Iterable[Mapping]) -> list[dict]:
    """Canonical copies of all ``configs``; fails on the first bad or duplicate one.

    Called before any training, so a typo in the last configuration costs nothing.
    """
    configs = list(configs)
    if not configs:
        raise ValueError("configs is empty; pass at least one configuration dict.")
    canon, seen = [], {}
    for i, config in enumerate(configs):
        c = canonical_config(config, i)
        text = _canonical_json(c)
        if text in seen:
            raise ValueError(f"config #{i} duplicates config #{seen[text]}: {c}.")
        seen[text] = i
        canon.append(c)
    return canon


def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_key(config: Mapping, context: Mapping | None = None) -> str:
    """Stable 16-hex-digit key of the canonical ``config`` (and the run ``context``)."""
    payload = {"config": canonical_config(config), "context": dict(context or {})}
    return hashlib.sha256(_canonical_json(payload).encode()).hexdigest()[:16]


def config_label(config: Mapping) -> str:
    """Short human label, e.g. ``lr=0.01 m=0.9 wd=0.001``, plus any non-default extra key."""
    c = canonical_config(config)
    label = f"lr={c['lr']:g} m={c['momentum']:g} wd={c['weight_decay']:g}"
    for key in ("batch_size", "dampening", "nesterov", "schedule"):
        if c[key] != CONFIG_KEYS[key].default:
            label += f" {key}={c[key]}"
    return label


def default_grid(epochs: int) -> list[dict]:
    """The course baselines plus a wider grid, all with ``epochs`` epochs.

    Baselines: lr 0.01 x momentum {0, 0.9} x weight decay {0, 0.01}, and
    0.005/0.9/0.001, 0.02/0.8/0.005, 0.01/0.7/0.002, 0.015/0.85/0.01, 0.008/0.95/0.003.
    Wider: lr {0.003, 0.03, 0.1} x momentum {0.9, 0.95} x weight decay {0, 5e-4}, plus two
    cosine schedules (lr 0.03, and notebook 03's lr 0.05 with Nesterov), each with momentum 0.9
    and weight decay 5e-4. 23 configurations.
    """
    grid = [{"lr": 0.01, "momentum": m, "weight_decay": wd} for m in (0.0, 0.9) for wd in (0.0, 0.01)]
    grid += [{"lr": lr, "momentum": m, "weight_decay": wd} for lr, m, wd in (
        (0.005, 0.9, 0.001), (0.02, 0.8, 0.005), (0.01, 0.7, 0.002), (0.015, 0.85, 0.01), (0.008, 0.95, 0.003))]
    grid += [{"lr": lr, "momentum": m, "weight_decay": wd}
             for lr in (0.003, 0.03, 0.1) for m in (0.9, 0.95) for wd in (0.0, 5e-4)]
    grid += [{"lr": 0.03, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "cosine"},
             {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": True, "schedule": "cosine"}]
    return [{**c, "epochs": epochs} for c in grid]


def quick_grid(epochs: int = 1) -> list[dict]:
    """A few configurations for quick mode (same code path, smaller grid)."""
    return [{"lr": 0.01, "momentum": m, "weight_decay": wd, "epochs": epochs}
            for m, wd in ((0.0, 0.0), (0.9, 0.0), (0.9, 0.01))]


# --------------------------------------------------------------------------- results file


def default_results_dir() -> Path:
    """Default folder for sweep results: ``<repo>/results`` (full), ``<repo>/build/quick-results`` (quick).

    Both are git-ignored; like the figures, quick runs never touch the full-size results.
    """
    return REPO_ROOT / ("build/quick-results" if settings().quick else "results")


def append_record(path: Path, record: Mapping) -> None:
    """Append ``record`` as one JSON line with a single ``os.write`` + fsync.

    A crash can leave at most a partial last line, never a half-written line
    in the middle; :func:`load_records` drops and reports such a line.
    """
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        if written != len(data):  # regular files don't short-write, but never leave half a line silently
            raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse_line(line: bytes):
    """The record in ``line``, or None if it is not a complete, self-consistent record."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or not {"key", "config", "history"} <= record.keys():
        return None
    return record


def load_records(path: Path, repair: bool = True) -> list[dict]:
    """All complete records in the JSON-lines file ``path`` (empty list if it does not exist).

    Lines that do not parse are reported with ``warnings.warn`` (file and line number) and
    dropped; with ``repair`` the file is rewritten without them (temp file + rename), so the
    next append starts on a clean line.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, good_lines, damaged = [], [], []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        record = _parse_line(line)
        if record is None:
            damaged.append(number)
        else:
            records.append(record)
            good_lines.append(line)
    clean = raw.endswith(b"\n") or not raw
    if damaged:
        warnings.warn(f"{path}: dropped damaged line(s) {damaged} (e.g. cut by an interrupted write); "
                      "their configurations will be trained again.", RuntimeWarning, stacklevel=2)
    if repair and (damaged or not clean):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_bytes(b"".join(line + b"\n" for line in good_lines))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return records


# --------------------------------------------------------------------------- training one configuration


def build_optimizer(model: nn.Module, config: Mapping) -> torch.optim.SGD:
    """``torch.optim.SGD`` with the configuration's lr, momentum, dampening, weight decay, nesterov."""
    c = canonical_config(config)
    return torch.optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], dampening=c["dampening"],
                           weight_decay=c["weight_decay"], nesterov=c["nesterov"])


def build_scheduler(optimizer: torch.optim.Optimizer, config: Mapping):
    """None for ``schedule="constant"``; cosine annealing to 0 over the epochs for ``"cosine"``."""
    c = canonical_config(config)
    if c["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c["epochs"])
    return None


def train_config(model: nn.Module, splits, config: Mapping, seed: int, device=None) -> dict:
    """Default training function of :func:`sweep`: SGD from ``config`` with ``helpers.train.train``.

    Returns the history (per-epoch ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
    ``lr``, ``seconds``).
    """
    from helpers.train import train  # here, not at the top: helpers.train re-exports sweep

    c = canonical_config(config)
    optimizer = build_optimizer(model, c)
    return train(model, splits, optimizer, epochs=c["epochs"], batch_size=c["batch_size"], seed=seed,
                 scheduler=build_scheduler(optimizer, c), device=device, progress=False)


TrainFn = Callable[[nn.Module, object, dict, int], Mapping]


@dataclass
class _Job:
    """What every worker needs, sent once per worker (data tensors go through shared memory)."""

    splits: object
    model_fn: Callable[[], nn.Module]
    init_state: dict
    train_fn: TrainFn
    seed: int
    threads: int
    context: dict
    checkpoint_dir: Path | None


_WORKER_JOB: _Job | None = None


def _init_worker(job: _Job) -> None:
    global _WORKER_JOB
    torch.set_num_threads(job.threads)
    _WORKER_JOB = job


def _run_in_worker(task: tuple[int, str, dict]) -> tuple[int, dict]:
    return _run_config(_WORKER_JOB, *task)


def _run_config(job: _Job, index: int, key: str, config: dict) -> tuple[int, dict]:
    """Train one configuration from the shared initial weights; returns (index, record)."""
    seed_everything(job.seed)
    model = job.model_fn()
    model.load_state_dict(job.init_state)
    start = time.perf_counter()
    history = {k: [float(v) for v in vals] for k, vals in dict(job.train_fn(model, job.splits, config, job.seed)).items()}
    seconds = time.perf_counter() - start
    missing = {"train_loss", "train_acc", "val_loss", "val_acc"} - history.keys()
    if missing:
        raise ValueError(f"train function returned a history without {sorted(missing)}.")
    checkpoint = None
    if job.checkpoint_dir is not None:
        from helpers.checkpoint import save_checkpoint

        checkpoint = save_checkpoint(model, job.checkpoint_dir / f"{key}.pt").name
    record = {
        "key": key,
        "config": config,
        "label": config_label(config),
        "history": history,
        "final": {k: history[k][-1] for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
        "seconds": seconds,
        "threads": job.threads,
        "context": job.context,
        "checkpoint": checkpoint,
    }
    return index, record


# --------------------------------------------------------------------------- the sweep


def data_fingerprint(splits) -> str:
    """16 hex digits of a SHA-256 over the train and validation tensors (catches any change of data)."""
    h = hashlib.sha256()
    for name in ("train", "val"):
        split = getattr(splits, name)
        for t in (split.x, split.y):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).reshape(-1).numpy().data if t.numel() else b"")
    return h.hexdigest()[:16]


def run_context(splits, model: nn.Module, seed: int) -> dict:
    """What besides the configuration decides a result: data, split sizes, model, seed."""
    return {
        "dataset": getattr(splits, "dataset", None),
        "data": getattr(splits, "source", None),
        "sizes": [len(splits.train), len(splits.val)],
        "fingerprint": data_fingerprint(splits),
        "model": f"{type(model).__name__}({sum(p.numel() for p in model.parameters())} parameters)",
        "seed": seed,
    }


def _make_job(splits, model_fn, seed, train_fn, threads, checkpoint_dir) -> tuple[_Job, nn.Module]:
    """The shared part of every configuration's run: data, initial weights (drawn once), seed."""
    seed = settings().seed if seed is None else int(seed)
    if model_fn is None:
        from helpers.models import CIFAR2MLP

        model_fn = CIFAR2MLP
    seed_everything(seed)
    init_model = model_fn()
    init_state = {k: v.detach().clone() for k, v in init_model.state_dict().items()}
    job = _Job(splits=splits, model_fn=model_fn, init_state=init_state, train_fn=train_fn or train_config,
               seed=seed, threads=threads, context=run_context(splits, init_model, seed),
               checkpoint_dir=checkpoint_dir)
    return job, init_model


def checkpoint_dir(folder: str | Path, name: str) -> Path:
    """Where a sweep keeps the final weights of each configuration: ``<folder>/<name>-checkpoints``."""
    return Path(folder) / f"{name}-checkpoints"


def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def sweep(
    configs: Sequence[Mapping],
    splits,
    model_fn: Callable[[], nn.Module] | None = None,
    *,
    name: str = "sweep",
    results_dir: str | Path | None = None,
    workers: int | None = None,
    threads_per_worker: int | None = None,
    seed: int | None = None,
    train_fn: TrainFn | None = None,
    save_checkpoints: bool = True,
    progress: Callable[[str], None] | None = print,
) -> list[dict]:
    """Train one model per configuration; returns one record per configuration, in order.

    ``configs``: dicts with the keys of :data:`CONFIG_KEYS`, all validated before any training.
    ``splits``: a ``helpers.data.DataSplits`` (``.train``, ``.val``). ``model_fn``: builds the
    network (picklable for workers; default ``helpers.models.CIFAR2MLP``); every configuration
    starts from the same weights, drawn once with ``seed`` (default ``settings().seed``).
    ``workers``: processes (default one per core, at most one per pending configuration; 1 runs
    in this process). ``threads_per_worker``: torch threads per configuration (default
    cores // workers, so the machine is not oversubscribed). ``train_fn(model, splits, config, seed) -> history`` (default
    :func:`train_config`; must be picklable when ``workers > 1``).

    Records already in ``<results_dir>/<name>.jsonl`` with the same key are reused, not
    retrained. A record holds ``key``, ``config``, ``label``, ``history``, ``final``
    (last-epoch metrics), ``seconds``, ``threads``, ``context`` (data source, ...) and
    ``checkpoint`` (file name of the final weights in ``<results_dir>/<name>-checkpoints``).
    """
    canon = validate_configs(configs)
    _check_name(name)
    job, _ = _make_job(splits, model_fn, seed, train_fn, threads=1, checkpoint_dir=None)
    keys = [config_key(c, job.context) for c in canon]
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    path = folder / f"{name}.jsonl"
    done = {r["key"]: r for r in load_records(path)}
    pending = [(i, k, c) for i, (k, c) in enumerate(zip(keys, canon)) if k not in done]
    say = progress or (lambda _msg: None)
    say(f"sweep {name!r}: {len(canon)} configs, {len(canon) - len(pending)} already in {path}, "
        f"{len(pending)} to train")

    cores = default_workers()
    workers = _check_count("workers", workers if workers is not None else cores)
    # Threads follow the requested workers, not the pending count, so a resumed sweep
    # trains its last configurations with the same thread count as the first ones.
    job.threads = _check_count("threads_per_worker", threads_per_worker if threads_per_worker is not None
                               else max(1, cores // workers))
    job.checkpoint_dir = checkpoint_dir(folder, name) if save_checkpoints else None
    n_done = len(canon) - len(pending)
    with closing(_execute(job, pending, max(1, min(workers, len(pending))))) as finished:
        for _index, record in finished:
            append_record(path, record)
            done[record["key"]] = record
            n_done += 1
            f = record["final"]
            say(f"  [{n_done}/{len(canon)}] {record['label']}: val_acc={f['val_acc']:.4f} "
                f"val_loss={f['val_loss']:.4f} ({record['seconds']:.1f} s, {job.threads} thread(s))")
    return [done[k] for k in keys]


def _execute(job: _Job, pending: list, workers: int):
    """Yield (index, record) as configurations finish, in this process or in a spawn pool."""
    if not pending:
        return
    if workers == 1:
        previous = torch.get_num_threads()
        torch.set_num_threads(job.threads)
        try:
            for task in pending:
                yield _run_config(job, *task)
        finally:
            torch.set_num_threads(previous)
        return
    pool = _pool_context().Pool(workers, initializer=_init_worker, initargs=(job,))
    try:
        yield from pool.imap_unordered(_run_in_worker, pending)
        pool.close()
    except BaseException:  # an error, Ctrl-C or an abandoned generator: stop the workers now
        pool.terminate()
        raise
    finally:
        pool.join()


def _pool_context():
    """A 'forkserver' context that has imported torch once (workers fork from it), else 'spawn'.

    Never plain 'fork': forking a process whose torch thread pool is running can deadlock.
    The fork server imports only modules, runs no torch op, so forking from it is safe,
    and it stays up for later sweeps of the same session, so they skip the import.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        # torch._dynamo: the first optimizer of a process imports it lazily (seconds); do it once here.
        ctx.set_forkserver_preload(["helpers.sweep", "helpers.train", "torch._dynamo"])
        return ctx
    return mp.get_context("spawn")


def _check_count(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1.")
    return value


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"sweep name {name!r} must be a plain file stem like '04_sweep'.")


def selected_model(record: Mapping, splits, model_fn: Callable[[], nn.Module] | None = None, *,
                   name: str = "sweep", results_dir: str | Path | None = None, seed: int | None = None,
                   train_fn: TrainFn | None = None) -> tuple[nn.Module, str]:
    """The trained model of one sweep ``record``: its checkpoint if present, else retrained.

    Returns ``(model, how)`` with ``how`` ``"checkpoint"`` or ``"retrained"``. Retraining
    repeats the sweep's run exactly (same initial weights, batch order and threads), so
    both give the same weights. ``seed`` must be the sweep's seed (default ``settings().seed``).
    """
    job, _ = _make_job(splits, model_fn, seed, train_fn, threads=int(record.get("threads", 1)), checkpoint_dir=None)
    if config_key(record["config"], job.context) != record["key"]:
        raise ValueError(f"record {record['key']} was made with other data, model or seed "
                         f"({record.get('context')}); pass the sweep's splits, model_fn and seed.")
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    path = checkpoint_dir(folder, name) / f"{record['key']}.pt"
    model = job.model_fn()
    if path.is_file():
        from helpers.checkpoint import load_checkpoint

        return load_checkpoint(model, path), "checkpoint"
    previous = torch.get_num_threads()
    torch.set_num_threads(job.threads)
    try:
        seed_everything(job.seed)
        model.load_state_dict(job.init_state)
        job.train_fn(model, job.splits, canonical_config(record["config"]), job.seed)
    finally:
        torch.set_num_threads(previous)
    return model, "retrained"


# --------------------------------------------------------------------------- selection


def _rank(record: Mapping) -> tuple[float, float]:
    """Sort key: higher final val accuracy first, then lower val loss; NaN/None rank last."""
    acc, loss = record["final"]["val_acc"], record["final"]["val_loss"]
    acc = -math.inf if acc is None or math.isnan(acc) else acc
    loss = math.inf if loss is None or math.isnan(loss) else loss
    return (-acc, loss)


def select_best(results: Sequence[Mapping]) -> dict:
    """The record with the highest final validation accuracy; ties go to the lower validation loss.

    A NaN loss or accuracy (a diverged run) ranks last. Remaining ties keep the first record.
    """
    if not results:
        raise ValueError("select_best got no results; run sweep() first.")
    return min(results, key=_rank)


def sort_results(results: Sequence[Mapping]) -> list[dict]:
    """Records ordered best first by the rule of :func:`select_best` (stable on full ties)."""
    return sorted(results, key=_rank)


# --------------------------------------------------------------------------- reporting


def results_table(results: Sequence[Mapping]) -> str:
    """Plain-text table of ``results``, best first: rank, configuration, final metrics, gap, time."""
    header = f"{'#':>3}  {'configuration':<52} {'val_acc':>8} {'val_loss':>9} {'train_acc':>9} {'gap':>7} {'time_s':>7}"
    rows = [header, "-" * len(header)]
    for rank, r in enumerate(sort_results(results), start=1):
        f = r["final"]
        rows.append(f"{rank:>3}  {r['label']:<52} {f['val_acc']:>8.4f} {f['val_loss']:>9.4f} "
                    f"{f['train_acc']:>9.4f} {f['train_acc'] - f['val_acc']:>+7.4f} {r['seconds']:>7.1f}")
    return "\n".join(rows)


def plot_sweep_curves(results: Sequence[Mapping], title: str | None = None, highlight: Mapping | None = None):
    """Validation accuracy and loss per epoch, one line per configuration (``highlight`` drawn bold)."""
    import matplotlib.pyplot as plt

    ordered = sort_results(results)
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.6))
    colors = plt.get_cmap("viridis")([i / max(1, len(ordered) - 1) for i in range(len(ordered))])
    for r, color in zip(ordered, colors):
        bold = highlight is not None and r["key"] == highlight["key"]
        style = {"color": "#d62728" if bold else color, "linewidth": 2.8 if bold else 1.1,
                 "zorder": 3 if bold else 2, "alpha": 1.0 if bold else 0.8}
        epochs = range(1, len(r["history"]["val_acc"]) + 1)
        ax_acc.plot(epochs, r["history"]["val_acc"], label=r["label"] + (" (selected)" if bold else ""), **style)
        ax_loss.plot(epochs, r["history"]["val_loss"], **style)
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy")
    ax_loss.set(xlabel="epoch", ylabel="validation loss", yscale="log")
    fig.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, title="best first")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_generalization_gap(results: Sequence[Mapping], title: str | None = None):
    """Final train and validation accuracy per configuration (best first) and their gap."""
    import matplotlib.pyplot as plt

    ordered = sort_results(results)
    labels = [r["label"] for r in ordered]
    train_acc = [r["final"]["train_acc"] for r in ordered]
    val_acc = [r["final"]["val_acc"] for r in ordered]
    y = list(range(len(ordered)))
    fig, (ax, ax_gap) = plt.subplots(1, 2, figsize=(11, 0.28 * len(ordered) + 1.6), sharey=True,
                                     gridspec_kw={"width_ratios": (2, 1)})
    ax.scatter(train_acc, y, marker="o", label="train (running mean of last epoch)", zorder=3)
    ax.scatter(val_acc, y, marker="s", label="validation", zorder=3)
    ax.hlines(y, val_acc, train_acc, color="grey", linewidth=1)
    ax.set(yticks=y, xlabel="final accuracy")
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.legend(fontsize=8, loc="best")
    ax_gap.barh(y, [t - v for t, v in zip(train_acc, val_acc)], color="#ff7f0e")
    ax_gap.axvline(0, color="black", linewidth=0.8)
    ax_gap.set(xlabel="train - validation accuracy")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def most_confident_mistakes(probs: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of up to ``k`` misclassified examples, most confident (wrong) prediction first.

    ``probs``: N x C probabilities, ``y``: N labels. Returns a 1-D int64 tensor.
    """
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"probs must be N x C and y N, got {tuple(probs.shape)} and {tuple(y.shape)}.")
    confidence, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).flatten()
    order = torch.argsort(confidence[wrong], descending=True, stable=True)
    return wrong[order][:k]
