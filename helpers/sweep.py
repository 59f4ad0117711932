"""The runner of many trainings (a sweep, a model zoo): validated configurations queued as trials of an Optuna
study (a journal file on one machine, a database for several), trained by worker processes here or on any machine
that reaches the storage (``python -m helpers.sweep work --study NAME``). A trial's key hashes its configuration
and context (data, model, seed), independent of storage and trial."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
import warnings
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from pathlib import Path

import optuna
import torch
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from torch import nn

from helpers.augment import random_affine
from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.config import seed_everything, settings
from helpers.data import DATASETS, load_dataset, n_batches
from helpers.models import CIFAR2MLP, MODEL_KINDS, MODEL_VARIANTS, make_model
from helpers.train import check_count, train

optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial

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


def train_config(model: nn.Module, splits, config: Mapping, seed: int, on_epoch=None) -> dict:
    """Default ``train_fn`` of :func:`sweep`: SGD and ``helpers.train.train`` as ``config`` says; the history.
    ``on_epoch(epoch, history)``: as in ``train`` (e.g. a pruner's report)."""
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
                 scheduler=scheduler, step_scheduler=step, progress=False, on_epoch=on_epoch,
                 augment=(lambda x: random_affine(x, g)) if c["augment"] == "online" else None)


# ---------------------------------------------------------------- the job: what every trial of a sweep shares

TrainFn = Callable[[nn.Module, object, dict, int], Mapping]
# Data, model function, seed and training function of a sweep. ``inits`` and ``contexts`` map a model name
# ("lenet/dropout", "model_fn") to its initial state_dict and run context; filled by _model_context.
_Job = namedtuple("_Job", "splits model_fn inits contexts train_fn seed fingerprint threads checkpoint_dir",
                  defaults=(1, None))


class JobError(RuntimeError):
    """A worker cannot rebuild or run a study's job (other data, no importable model, no job recorded)."""


def _model_name(config: Mapping) -> str:
    return "model_fn" if config["model"] == "model_fn" else f"{config['model']}/{config['variant']}"


def _fingerprint(splits) -> str:
    """16 hex digits of a hash of the train and validation tensors: catches any change of data."""
    h = hashlib.sha256()
    for name in ("train", "val"):
        for t in (getattr(splits, name).x, getattr(splits, name).y):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).reshape(-1).numpy().data if t.numel() else b"")
    return h.hexdigest()[:16]


def _make_job(splits, model_fn, seed, train_fn, configs: Iterable[dict]) -> _Job:
    """Data, seed and the initial weights of each model in ``configs`` (each drawn once from ``seed``)."""
    seed = settings().seed if seed is None else int(seed)
    job = _Job(splits, model_fn, {}, {}, train_fn or train_config, seed, _fingerprint(splits))
    for c in configs:
        _model_context(job, c)
    return job


def _model_context(job: _Job, config: Mapping) -> dict:
    """The run context of ``config``'s model (data, seed, model); draws its initial weights the first time."""
    name = _model_name(config)
    if name not in job.contexts:
        seed_everything(job.seed)
        model = build_model(config, job.model_fn)
        job.inits[name] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        n_params = sum(p.numel() for p in model.parameters())
        splits = job.splits
        job.contexts[name] = {"dataset": getattr(splits, "dataset", None), "data": getattr(splits, "source", None),
                              "sizes": [len(splits.train), len(splits.val)], "fingerprint": job.fingerprint,
                              "seed": job.seed, "model": f"{type(model).__name__}({n_params} parameters)"}
    return job.contexts[name]


def _trained(job: _Job, config: dict) -> tuple[nn.Module, dict]:
    """The model of ``config`` trained from its shared initial weights, and its history."""
    _model_context(job, config)
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


def _importable(obj) -> str | None:
    """``module:qualname`` of a module-level function or class, else None (a lambda, a partial, a notebook cell's)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not isinstance(qualname, str) or module == "__main__" or "<" in qualname:
        return None
    try:
        return f"{module}:{qualname}" if _resolve(f"{module}:{qualname}") is obj else None
    except (ImportError, AttributeError):
        return None


def _resolve(name: str):
    """The object that ``module:qualname`` names."""
    module, _, qualname = name.partition(":")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _describe(job: _Job) -> dict:
    """What a worker elsewhere needs to rebuild ``job`` (JSON); ``why_not`` says what cannot be described."""
    why, names = [], {}
    splits = job.splits
    data = {"dataset": splits.dataset, "val_fraction": splits.val_fraction, "split_seed": splits.seed,
            "quick": splits.quick, "source": settings().data_source} if getattr(splits, "dataset", None) in DATASETS \
        else None
    if data is None:
        why.append(f"its data ({getattr(splits, 'dataset', None)!r}) comes from no loader of helpers.data")
    for role, obj in (("model_fn", job.model_fn), ("train_fn", None if job.train_fn is train_config else job.train_fn)):
        names[role] = None if obj is None else _importable(obj)
        if obj is not None and names[role] is None:
            why.append(f"its {role} {obj!r} has no importable name (a notebook cell's or script's function, "
                       "a lambda or a partial)")
    return {"data": data, "fingerprint": job.fingerprint, **names, "seed": job.seed, "threads": job.threads,
            "checkpoints": job.checkpoint_dir is not None, "why_not": "; ".join(why) or None}


def _job_from_study(study, results_dir: Path | None, threads: int | None) -> _Job:
    """The job recorded in ``study``, rebuilt here; JobError if it cannot be, or the data differs."""
    desc = study.user_attrs.get("job")
    if not desc:
        raise JobError(f"study {study.study_name!r} records no job; fill it with helpers.sweep.sweep first.")
    if desc["why_not"]:
        raise JobError(f"study {study.study_name!r} cannot run on a worker started by hand: {desc['why_not']}. "
                       "Fix: run it with sweep(..., workers=N) in the process that made it.")
    d = desc["data"]
    splits = load_dataset(d["dataset"], val_fraction=d["val_fraction"], seed=d["split_seed"], quick=d["quick"],
                          source=d["source"])
    if (fingerprint := _fingerprint(splits)) != desc["fingerprint"]:
        raise JobError(f"study {study.study_name!r} trains on other data than this machine loads ({splits.source}; "
                       f"fingerprint {fingerprint}, the study's {desc['fingerprint']}). Fix: give this machine the "
                       "same data files (HELPERS_DATA_DIR), or run the worker where the sweep ran.")
    job = _make_job(splits, desc["model_fn"] and _resolve(desc["model_fn"]), desc["seed"],
                    desc["train_fn"] and _resolve(desc["train_fn"]), [])
    folder = default_results_dir() if results_dir is None else Path(results_dir)
    return job._replace(threads=threads or desc["threads"],
                        checkpoint_dir=checkpoint_dir(folder, study.study_name) if desc["checkpoints"] else None)


# ---------------------------------------------------------------- the storage: a journal file or a database

STORAGE_VARIABLE = "HELPERS_SWEEP_STORAGE"
HEARTBEAT_INTERVAL, GRACE_PERIOD = 5, 20  # seconds; a RUNNING trial without a heartbeat for GRACE_PERIOD is stale
RETRIES = 2  # a configuration whose worker died is queued again at most this often
HOST = socket.gethostname()


class StorageError(RuntimeError):
    """The study's storage cannot be opened or reached."""


def storage_spec(storage: str | Path | None, folder: str | Path, name: str) -> str:
    """``storage``, else ``HELPERS_SWEEP_STORAGE``, else the journal file ``<folder>/<name>.journal``."""
    spec = str(storage or os.environ.get(STORAGE_VARIABLE, "").strip() or Path(folder) / f"{name}.journal")
    return str(Path(spec).expanduser().resolve()) if is_journal(spec) else spec


def is_journal(spec: str) -> bool:
    return str(spec).endswith(".journal")


def masked(spec: str) -> str:
    """``spec`` with any password in a URL replaced by ``***``."""
    try:
        return make_url(spec).render_as_string(hide_password=True)
    except Exception:  # not a URL: a path
        return spec


def open_storage(spec: str, shared: bool = True):
    """The Optuna storage ``spec`` names: a path ending in ``.journal`` (a journal file, safe for several
    processes on one machine) or a SQLAlchemy URL (heartbeats on); SQLite only for one process (``shared=False``)."""
    if is_journal(spec):
        path = Path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        repair_journal(path)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in spec:
        raise StorageError(f"storage {spec!r} is neither a journal file (a path ending in .journal) nor a database URL "
                           "(e.g. postgresql+psycopg://user@host/db).")
    if spec.startswith("sqlite") and shared:
        raise StorageError(f"{masked(spec)}: SQLite is not for several processes (its locks fail under parallel "
                           "writes). Fix: use a journal file (storage=None) or PostgreSQL, or workers=1.")
    timeout = {"connect_args": {"connect_timeout": 5}} if spec.startswith(("postgresql", "mysql")) else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(spec, engine_kwargs=timeout, heartbeat_interval=HEARTBEAT_INTERVAL,
                              grace_period=GRACE_PERIOD, heartbeat_stale_trial_callback=_queue_again)
    except Exception as err:
        reason = str(getattr(err, "orig", None) or err).strip().splitlines()[0]
        raise StorageError(f"cannot open the study storage {masked(spec)}: {reason}") from None


def repair_journal(path: Path) -> None:
    """Drop a cut last line of the journal ``path`` (a worker killed while appending), with a RuntimeWarning;
    any other damage raises StorageError naming the file. Holds the journal's lock."""
    lock = JournalFileSymlinkLock(str(path))  # Optuna's own: blocks; a lock left by a killed process expires
    lock.acquire()
    try:
        raw = path.read_bytes() if path.exists() else b""
        *lines, cut = raw.split(b"\n")
        for number, line in enumerate(lines, start=1):
            try:
                json.loads(line)
            except ValueError:
                raise StorageError(f"{path}: line {number} is damaged (not a journal entry), not just a cut last "
                                   "line. Fix: restore a copy, or move the file away to start the study "
                                   "afresh.") from None
        if cut:
            warnings.warn(f"{path}: dropped a cut last line ({len(cut)} bytes; a process was killed while writing "
                          "it); a trial it left running is queued again.", RuntimeWarning, stacklevel=3)
            os.truncate(path, len(raw) - len(cut))
    finally:
        lock.release()


def _open_study(spec: str, name: str, shared: bool, create: bool = True) -> optuna.Study:
    storage = open_storage(spec, shared)
    kw = dict(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
    try:
        if create:
            return optuna.create_study(direction="maximize", load_if_exists=True, **kw)
        return optuna.load_study(**kw)
    except (optuna.exceptions.StorageInternalError, OSError) as err:
        raise StorageError(f"cannot use the study storage {masked(spec)}: {err}") from None


# ---------------------------------------------------------------- the queue

def _trials(study, *states: TrialState) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=states or None)


def _enqueue(study, key: str, config: dict, attempt: int = 0) -> None:
    # No skip_if_exists: Optuna's check counts failed trials too, so a failed configuration would never run again.
    study.enqueue_trial({}, user_attrs={"key": key, "config": config, "attempt": attempt})


def _requeue(study, trial: FrozenTrial, retry: bool = True) -> None:
    """Fail a RUNNING ``trial`` (unless another process did) and queue its configuration again: as a retry
    (at most RETRIES times) after a dead worker, as the same attempt after an interrupt (``retry=False``)."""
    try:
        if not study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    _queue_again(study, trial, retry)


def _queue_again(study, trial: FrozenTrial, retry: bool = True) -> None:
    """Queue ``trial``'s configuration again (also Optuna's callback for a trial failed for a stale heartbeat)."""
    attempt = trial.user_attrs.get("attempt", 0) + retry
    if "key" in trial.user_attrs and attempt <= RETRIES:
        _enqueue(study, trial.user_attrs["key"], trial.user_attrs["config"], attempt)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(study) -> None:
    """Fail and queue again the RUNNING trials whose worker is gone: its process is dead on this host, or
    (on a database) its heartbeat is stale. A RUNNING trial of a live process is never touched."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a no-op without heartbeats (a journal)
    for t in _trials(study, TrialState.RUNNING):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == HOST and pid is not None and not _alive(pid):
            _requeue(study, t)


# ---------------------------------------------------------------- a worker

@contextmanager
def _heartbeat(study, trial_id: int):
    """Record heartbeats of ``trial_id`` every interval while the block runs (only on a database storage)."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() if isinstance(storage, RDBStorage) else None
    stop = threading.Event()

    def beat():
        while True:
            storage.record_heartbeat(trial_id)
            if stop.wait(interval):
                return
    thread = threading.Thread(target=beat, daemon=True) if interval else None
    if thread:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread:
            thread.join()


def _run_trial(study, job: _Job) -> bool:
    """Pop one queued trial and train it; False if the queue was empty (a trial without a configuration)."""
    with warnings.catch_warnings():  # heartbeats: recorded by _heartbeat, not Study.optimize
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        trial = study.ask()
    attrs = trial.user_attrs
    if "key" not in attrs:  # another worker took the last queued trial
        study.tell(trial, state=TrialState.FAIL)
        return False
    trial.set_user_attr("host", HOST)
    trial.set_user_attr("pid", os.getpid())
    config = canonical_config(attrs["config"])
    try:
        if config_key(config, _model_context(job, config)) != attrs["key"]:
            raise JobError(f"this worker's data, model or seed differ from the sweep's: key "
                           f"{config_key(config, _model_context(job, config))} != {attrs['key']}.")
        with _heartbeat(study, trial._trial_id):
            record = _run_config(job, attrs["key"], config)
    except Exception:  # the configuration's own error: failed once, reported by sweep, never retried
        trial.set_user_attr("error", traceback.format_exc(limit=-4))
        study.tell(trial, state=TrialState.FAIL)
        return True
    except BaseException:  # Ctrl-C or exit: the trial goes back to the queue
        _requeue(study, study._storage.get_trial(trial._trial_id), retry=False)
        raise
    trial.set_user_attr("record", record)
    acc = record["final"]["val_acc"]
    if not math.isfinite(acc) or not math.isfinite(record["final"]["val_loss"]):
        trial.set_user_attr("diverged", True)
    study.tell(trial, acc if math.isfinite(acc) else 0.0)  # never NaN: Optuna would fail the trial
    return True


def work(study, job: _Job, stop: threading.Event | None = None) -> int:
    """Train queued trials of ``study`` until its queue is empty or ``stop`` is set; returns how many ran."""
    ran = 0
    with _threads(job.threads):
        while not (stop and stop.is_set()) and _trials(study, TrialState.WAITING):
            recover(study)
            ran += _run_trial(study, job)
    return ran


@contextmanager
def _threads(n: int):
    """torch uses ``n`` threads inside the block (float32 sums depend on it: equal runs need equal counts)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------- the sweep: fill the queue, work, collect

def default_workers() -> int:
    """One worker per core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def sweep(configs: Sequence[Mapping], splits, model_fn: Callable[[], nn.Module] | None = None, *,
          name: str = "sweep", results_dir: str | Path | None = None, workers: int | None = None,
          threads_per_worker: int | None = None, seed: int | None = None, train_fn: TrainFn | None = None,
          save_checkpoints: bool = True, progress: Callable[[str], None] | None = print,
          storage: str | Path | None = None) -> list[dict]:
    """Train one model per configuration (all validated first) as trials of the Optuna study ``name``; returns
    one record each, in order: ``key``, ``config``, ``label``, ``history``, ``final`` (last epoch), ``seconds``,
    ``threads``, ``context``, ``checkpoint`` (file name in ``<results_dir>/<name>-checkpoints``).
    ``storage``: a ``.journal`` path or a database URL (default ``HELPERS_SWEEP_STORAGE``, else
    ``<results_dir>/<name>.journal``); ``workers``: training processes, this one included (0: only fill the
    queue and return the records complete so far); ``model_fn``: the network of configurations naming no
    ``model``; ``train_fn(model, splits, config, seed)`` returns the history (default :func:`train_config`)."""
    canon = validate_configs(configs)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"sweep name {name!r} must be a plain file stem like '04_sweep'.")
    workers = default_workers() if workers is None else workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"workers={workers!r} must be an integer >= 0 (0: only fill the queue).")
    folder = Path(results_dir) if results_dir is not None else default_results_dir()
    # Threads follow the requested workers, not the pending count: a resumed sweep keeps its thread count.
    threads = threads_per_worker if threads_per_worker is not None else max(1, default_workers() // max(workers, 1))
    job = _make_job(splits, model_fn, seed, train_fn, canon)._replace(
        threads=check_count("threads_per_worker", threads),
        checkpoint_dir=checkpoint_dir(folder, name) if save_checkpoints else None)
    keys = [config_key(c, job.contexts[_model_name(c)]) for c in canon]
    spec = storage_spec(storage, folder, name)
    desc = _describe(job)
    if not is_journal(spec) and not spec.startswith("sqlite") and desc["why_not"]:
        raise JobError(f"a database storage serves workers on other machines, and they cannot rebuild this sweep: "
                       f"{desc['why_not']}. Fix: use a loader of helpers.data and a module-level model_fn, or a "
                       "journal file (storage=None) on one machine.")
    study = _open_study(spec, name, shared=workers != 1)
    _claim(study, desc, canon, keys, spec)
    recover(study)
    by_key = _by_key(study)
    done = sum(any(t.state == TrialState.COMPLETE for t in by_key.get(k, ())) for k in keys)
    live = (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING)
    pending = [(k, c) for k, c in zip(keys, canon) if not any(t.state in live for t in by_key.get(k, ()))]
    say = progress or (lambda _msg: None)
    say(f"sweep {name!r}: {len(canon)} configs, {done} already in {masked(spec)}, {len(pending)} to train, "
        f"{len(canon) - done - len(pending)} queued or running elsewhere")
    if workers > 1:
        pending.sort(key=lambda task: -_expected_seconds(job, task[1]))  # longest first: packs best
    for key, config in pending:
        _enqueue(study, key, config)
    if workers == 0:
        records = _complete(study)
        return [records[k] for k in keys if k in records]
    pool = _Pool(spec, name, job, folder, min(workers, len(canon) - done) - 1)
    try:
        with _threads(job.threads):
            return _collect(study, job, keys, pool, say)
    except BaseException:
        pool.stop(study)
        raise
    finally:
        pool.close()


def _claim(study, desc: dict, canon: list[dict], keys: list[str], spec: str) -> None:
    """Record the job in a new study; in an old one, refuse a configuration it knows with another context."""
    old = study.user_attrs.get("job")
    if old is None:
        study.set_user_attr("job", desc)
        return
    known = {json.dumps(t.user_attrs["config"], sort_keys=True): t.user_attrs["key"]
             for t in _trials(study) if "key" in t.user_attrs}
    clash = [c for c, k in zip(canon, keys) if known.get(json.dumps(c, sort_keys=True), k) != k]
    if clash or (old["fingerprint"], old["seed"]) != (desc["fingerprint"], desc["seed"]):
        where = f"delete {spec}" if is_journal(spec) else \
            f"optuna.delete_study(study_name={study.study_name!r}, storage=...)"
        raise ValueError(f"study {study.study_name!r} in {masked(spec)} was made with other data, model or seed "
                         f"(data fingerprint {old['fingerprint']}, seed {old['seed']}; now {desc['fingerprint']}, "
                         f"seed {desc['seed']}){': e.g. ' + config_label(clash[0]) if clash else ''}. "
                         f"Fix: start a new study with another name= (e.g. {study.study_name + '_2'!r}), or {where}.")


def _by_key(study) -> dict[str, list[FrozenTrial]]:
    out: dict[str, list[FrozenTrial]] = {}
    for t in _trials(study):
        if "key" in t.user_attrs:
            out.setdefault(t.user_attrs["key"], []).append(t)
    return out


def _complete(study) -> dict[str, dict]:
    """The record of each key's first complete trial."""
    out: dict[str, dict] = {}
    for t in _trials(study, TrialState.COMPLETE):
        if "record" in t.user_attrs:
            out.setdefault(t.user_attrs["key"], t.user_attrs["record"])
    return out


def study_records(name: str, storage: str | Path | None = None, results_dir: str | Path | None = None) -> list[dict]:
    """The complete records of the study ``name`` (in trial order); [] if there is none."""
    spec = storage_spec(storage, default_results_dir() if results_dir is None else results_dir, name)
    if is_journal(spec) and not Path(spec).exists():
        return []
    try:
        return list(_complete(_open_study(spec, name, shared=True, create=False)).values())
    except KeyError:
        return []


def _collect(study, job: _Job, keys: list[str], pool: _Pool, say) -> list[dict]:
    """Work the queue here beside ``pool`` until every key has a complete trial; raise for those that cannot."""
    shown = set(_complete(study))
    while True:
        records = _complete(study)
        for key in [k for k in keys if k in records and k not in shown]:
            shown.add(key)
            r, f = records[key], records[key]["final"]
            say(f"  [{len(shown & set(keys))}/{len(keys)}] {r['label']}: val_acc={f['val_acc']:.4f} "
                f"val_loss={f['val_loss']:.4f} ({r['seconds']:.1f} s, {r['threads']} thread(s))")
        if all(k in records for k in keys):
            return [records[k] for k in keys]
        pool.poll()
        recover(study)
        if _trials(study, TrialState.WAITING):
            _run_trial(study, job)  # one at a time, so that progress shows as trials finish
            continue
        by_key = _by_key(study)
        if not any(t.state in (TrialState.WAITING, TrialState.RUNNING) for k in keys for t in by_key.get(k, ())):
            _raise_failed(keys, records, by_key)
        time.sleep(0.2)


def _raise_failed(keys, records, by_key) -> None:
    """RuntimeError naming every configuration without a complete trial, and why."""
    lines = []
    for key in (k for k in keys if k not in records):
        last = max(by_key[key], key=lambda t: t.number)
        label = config_label(last.user_attrs["config"])
        if "error" in last.user_attrs:
            lines.append(f"{label}: its training raised\n{last.user_attrs['error'].rstrip()}")
        else:
            lines.append(f"{label}: failed {last.user_attrs.get('attempt', 0) + 1} times (its worker died each "
                         "time); nothing more is retried")
    raise RuntimeError(f"{len(lines)} configuration(s) did not complete:\n" + "\n".join(lines))


class _Pool:
    """``n`` local worker processes (``python -m helpers.sweep work``), each handed ``job`` through its stdin;
    a worker sees the end of its stdin when this process closes it or dies (kill -9 included), and stops."""

    def __init__(self, spec: str, name: str, job: _Job, folder: Path, n: int):
        self.processes: list[subprocess.Popen] = []
        if n < 1:
            return
        try:
            payload = pickle.dumps(sys.path) + pickle.dumps(job)
        except (pickle.PicklingError, AttributeError, TypeError):
            payload = b"__main__"
        if b"__main__" in payload:
            raise JobError("the sweep's model_fn or train_fn cannot reach worker processes: it is a lambda, or defined "
                           "in a notebook cell or in the script run as __main__, which a worker cannot import. "
                           "Fix: define it in a module, or workers=1.")
        env = {**os.environ, STORAGE_VARIABLE: spec,
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                              *filter(None, [os.environ.get("PYTHONPATH")])])}
        command = [sys.executable, "-m", "helpers.sweep", "work", "--study", name, "--threads", str(job.threads),
                   "--results-dir", str(folder), "--job-from-stdin"]
        for _ in range(n):
            process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env)
            threading.Thread(target=self._send, args=(process, payload), daemon=True).start()
            self.processes.append(process)

    @staticmethod
    def _send(process: subprocess.Popen, payload: bytes) -> None:
        try:
            process.stdin.write(payload)
            process.stdin.flush()  # the pipe stays open: its end tells the worker to stop
        except (BrokenPipeError, ValueError, OSError):
            pass

    def poll(self) -> None:
        """Reap finished workers, so that a dead one's pid no longer looks alive to :func:`recover`."""
        for process in self.processes:
            process.poll()

    def stop(self, study) -> None:
        """Interrupt the workers (each queues its trial again), give them 5 s, then kill them."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 5
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        recover(study)

    def close(self) -> None:
        """Close the workers' stdin (they finish their trial and exit) and wait for them."""
        for process in self.processes:
            with suppress(OSError):
                process.stdin.close()
        for process in self.processes:
            process.wait()


def _expected_seconds(job: _Job, config: dict) -> float:
    """Rough cost, only to order the work: one timed step of the model on one batch, times the run's steps."""
    model = build_model(config, job.model_fn)
    x, y = job.splits.train.x[:config["batch_size"]], job.splits.train.y[:config["batch_size"]]
    for _ in range(2):  # the first step pays one-time costs
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x), y).backward()
    n = config["n_train"] or len(job.splits.train)
    return (time.perf_counter() - start) * config["epochs"] * n * (2 if config["augment"] == "double" else 1)


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
    with _threads(int(record.get("threads", 1))):
        return _trained(job, config)[0], "retrained"


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


# ---------------------------------------------------------------- python -m helpers.sweep work

def _watch_stdin(stream) -> threading.Event:
    """An event set when ``stream`` ends: the parent closed it, or died."""
    ended = threading.Event()

    def watch():
        with suppress(OSError):
            while os.read(stream.fileno(), 65536):
                pass
        ended.set()
    threading.Thread(target=watch, daemon=True).start()
    return ended


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.sweep work --study NAME [--storage URL_OR_JOURNAL_PATH] [--threads N]
    [--results-dir DIR]``: run the study's queued trials until the queue is empty, then exit 0."""
    parser = argparse.ArgumentParser(prog="python -m helpers.sweep", description=main.__doc__.split(": ", 1)[1])
    commands = parser.add_subparsers(dest="command", required=True)
    w = commands.add_parser("work", help="run queued trials of a study until its queue is empty")
    w.add_argument("--study", required=True, help="the study's name (the sweep's name=)")
    w.add_argument("--storage", default=os.environ.get(STORAGE_VARIABLE, "").strip() or None,
                   help=f"a database URL or a path ending in .journal (default: ${STORAGE_VARIABLE}, which keeps "
                        "a password out of ps)")
    w.add_argument("--threads", type=int, default=None, help="torch threads (default: the sweep's)")
    w.add_argument("--results-dir", type=Path, default=None, help="for checkpoints (default: HELPERS_RESULTS_DIR)")
    w.add_argument("--job-from-stdin", action="store_true", help=argparse.SUPPRESS)  # the local pool's workers
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return _work_command(args)
    except (StorageError, JobError) as err:
        print(f"helpers.sweep work: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the trial went back to the queue
        return 130


def _work_command(args) -> int:
    job, stop = None, None
    if args.job_from_stdin:
        sys.path[:0] = [p for p in pickle.load(sys.stdin.buffer) if p not in sys.path]
        job = pickle.load(sys.stdin.buffer)
        stop = _watch_stdin(sys.stdin.buffer)
    if not args.storage:
        raise StorageError(f"no storage: pass --storage URL_OR_JOURNAL_PATH or set {STORAGE_VARIABLE}.")
    spec = storage_spec(args.storage, ".", args.study)
    if is_journal(spec) and not Path(spec).exists():
        print(f"no study {args.study!r}: {spec} does not exist; nothing to do.")
        return 0
    try:
        study = _open_study(spec, args.study, shared=True, create=False)
    except KeyError:
        print(f"no study {args.study!r} in {masked(spec)}; nothing to do.")
        return 0
    if not _trials(study, TrialState.WAITING):
        if not args.job_from_stdin:
            print(f"study {args.study!r} has no queued trials; nothing to do.")
        return 0
    job = job or _job_from_study(study, args.results_dir, args.threads)
    ran = work(study, job, stop)
    if not args.job_from_stdin:
        print(f"worker {HOST}:{os.getpid()} ran {ran} trial(s) of {args.study!r}; its queue is empty.")
    return 0


if __name__ == "__main__":  # one copy of this module: the job's classes are helpers.sweep's
    from helpers.sweep import main as _main

    status = _main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # every result is stored; skip the teardown of torch (seconds), so no worker lingers
