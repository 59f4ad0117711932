"""helpers.sweep: config validation, hashing, the study as the store (resume, damaged journals, reused names),
selection, parallel == serial, failures of workers and of training."""

import functools
import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import optuna
import pytest
import torch

from helpers import sweep as sw
from helpers.data import DataSplits, Split
from helpers.models import CIFAR2MLP


def _tiny_splits(n=96, seed=0):
    """A real helpers.data.DataSplits of random 3x4x4 images (picklable, so workers can load it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, 4, generator=g)
    y = (x[:, 0].mean((1, 2)) > 0).long()
    cut = (0, n // 2, 3 * n // 4, n)
    classes = ("a", "b")
    splits = [Split(x[a:b], y[a:b], classes, name) for a, b, name in zip(cut, cut[1:], ("train", "val", "test"))]
    return DataSplits(*splits, mean=torch.zeros(3), std=torch.ones(3), source="tiny synthetic test data",
                      dataset="tiny", classes=classes, seed=seed, quick=True, val_fraction=0.25)


_tiny_model = functools.partial(CIFAR2MLP, sizes=(48, 8, 2))  # picklable, so workers can build it


class _FakeTrain:
    """Counts calls; the 'history' is a deterministic function of the config and the initial weights."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def __call__(self, model, splits, config, seed):
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt  # the user pressed Ctrl-C in the middle of the sweep
        self.calls.append(config)
        w = float(sum(p.detach().sum() for p in model.parameters()))
        acc = round(1 - abs(config["lr"] - 0.02) - config["weight_decay"], 6)
        e = config["epochs"]
        return {"train_loss": [1.0] * e, "train_acc": [acc + 0.05] * e, "val_loss": [w] * e, "val_acc": [acc] * e}


CONFIGS = [{"lr": lr, "momentum": 0.9, "weight_decay": wd, "epochs": 2} for lr in (0.01, 0.02, 0.05) for wd in (0, 1e-3)]


def _untimed(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _run(tmp_path, train_fn, configs=CONFIGS, **kw):
    kw.setdefault("workers", 1)
    return sw.sweep(configs, _tiny_splits(), _tiny_model, results_dir=tmp_path, name="t", train_fn=train_fn,
                    seed=0, save_checkpoints=False, progress=None, **kw)


# ---------------------------------------------------------------- validation and hashing


@pytest.mark.parametrize("bad, key", [
    ({"lr": -0.1}, "lr=-0.1"),
    ({"lr": 0}, "lr=0"),
    ({"momentum": 1.0}, "momentum=1.0"),
    ({"momentum": -0.5}, "momentum=-0.5"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001"),
    ({"epochs": 0}, "epochs=0"),
    ({"epochs": 2.5}, "epochs=2.5"),
    ({"lr": "0.01"}, "lr='0.01'"),
    ({"schedule": "linear"}, "schedule='linear'"),
    ({"momentun": 0.9}, "'momentun'"),
    ({"nesterov": True, "momentum": 0.0}, "nesterov=True"),
])
def test_bad_config_fails_before_any_training(tmp_path, bad, key):
    fake = _FakeTrain()
    configs = CONFIGS[:3] + [{**CONFIGS[3], **bad}]
    with pytest.raises(ValueError, match="config #3") as err:
        _run(tmp_path, fake, configs)
    assert key in str(err.value)
    assert fake.calls == []
    assert not (tmp_path / "t.journal").exists()


def test_missing_required_key_and_duplicates_are_rejected():
    with pytest.raises(ValueError, match="'epochs' is missing"):
        sw.validate_configs([{"lr": 0.1}])
    with pytest.raises(ValueError, match="config #1 duplicates config #0"):
        sw.validate_configs([{"lr": 0.1, "epochs": 1}, {"lr": 0.1, "epochs": 1, "momentum": 0}])
    with pytest.raises(ValueError, match="empty"):
        sw.validate_configs([])


def test_config_key_is_canonical_and_context_sensitive():
    a = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0, "epochs": 3}
    b = {"epochs": 3, "weight_decay": 0.0, "lr": 0.01, "momentum": 0.9, "batch_size": 128, "schedule": "constant"}
    assert sw.config_key(a) == sw.config_key(b)  # key order, int/float and defaults don't matter
    assert sw.config_key(a) != sw.config_key({**a, "lr": 0.02})
    assert sw.config_key(a, {"data": "x"}) != sw.config_key(a, {"data": "y"})
    assert len(sw.config_key(a)) == 16


def test_default_grid_holds_the_course_baselines_and_is_valid():
    grid = sw.validate_configs(sw.default_grid(epochs=5))
    triples = [(c["lr"], c["momentum"], c["weight_decay"]) for c in grid]
    baselines = [t for t, _report in sw.BASELINES]
    assert triples[:len(baselines)] == baselines  # the baselines come first, in the table's order
    assert {(0.01, 0.9, 0.001), (0.01, 0.8, 0.01), (0.01, 0.0, 0.0), (0.008, 0.95, 0.003)} <= set(baselines)
    assert {report for _t, report in sw.BASELINES} == {sw.SOLUTIONS, sw.INF265}  # every source named
    assert [t for t, report in sw.BASELINES if report == sw.INF265] == [(0.01, 0.9, 0.001), (0.01, 0.8, 0.01)]
    assert len(grid) > len(baselines) and all(c["epochs"] == 5 for c in grid)


@pytest.mark.parametrize("bad, match", [
    ({"model": "resnet"}, "model='resnet'"), ({"variant": "dropout"}, "variant='dropout' needs a model kind"),
    ({"model": "mlp", "variant": "bn"}, "variant='bn'"), ({"n_train": -1}, "n_train=-1"),
    ({"augment": "twice"}, "augment='twice'"), ({"schedule": "onecycle", "model": "lenet", "n_train": 2.0}, "n_train=2.0"),
])
def test_model_and_data_keys_are_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        sw.canonical_config({"lr": 0.1, "epochs": 1, **bad})


# ---------------------------------------------------------------- resume, the study's trials, damaged journals


def _study(tmp_path, name="t"):
    return optuna.load_study(study_name=name, storage=sw.open_storage(str(tmp_path / f"{name}.journal")))


def test_rerun_skips_finished_configs(tmp_path):
    first, second = _FakeTrain(), _FakeTrain()
    a = _run(tmp_path, first)
    b = _run(tmp_path, second)
    assert len(first.calls) == len(CONFIGS) and second.calls == []
    assert a == b
    trials = _study(tmp_path).get_trials()
    assert len(trials) == len(CONFIGS) and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.user_attrs["key"] for t in trials] == [r["key"] for r in a]
    assert all({"key", "config", "host", "pid"} <= t.user_attrs.keys() for t in trials)
    assert [t.value for t in trials] == [r["final"]["val_acc"] for r in a]  # the objective: final val_acc
    assert sw.study_records("t", results_dir=tmp_path) == a


def test_interrupted_sweep_loses_nothing_and_repeats_nothing(tmp_path):
    interrupted = _FakeTrain(fail_at=4)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, interrupted)
    assert len(sw.study_records("t", results_dir=tmp_path)) == 4
    resumed = _FakeTrain()
    results = _run(tmp_path, resumed)
    assert sorted(map(json.dumps, resumed.calls)) == sorted(map(json.dumps, sw.validate_configs(CONFIGS[4:])))
    assert [r["config"] for r in results] == sw.validate_configs(CONFIGS)  # in the order asked
    fresh = _run(tmp_path / "fresh", _FakeTrain())  # an uninterrupted sweep
    assert _untimed(results) == _untimed(fresh)


def test_cut_last_line_of_the_journal_is_dropped_with_a_warning_and_retrained(tmp_path):
    # A process killed while appending leaves a cut last line (and its trial RUNNING under a dead pid).
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); from pathlib import Path; "
            f"from test_sweep import _run, _FakeTrain; _run(Path({str(tmp_path)!r}), _FakeTrain())")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    path = tmp_path / "t.journal"
    raw = path.read_bytes()
    last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(raw[: last_start + 20])  # a crash cut the last line mid-write: the last tell is lost
    again = _FakeTrain()
    with pytest.warns(RuntimeWarning, match=r"t\.journal: dropped a cut last line"):
        results = _run(tmp_path, again)
    assert len(again.calls) == 1  # only the config whose completion was cut is trained again
    assert len(results) == len(CONFIGS)
    assert path.read_bytes().endswith(b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file was repaired: no warning any more
        assert _run(tmp_path, _FakeTrain()) == results


def test_other_damage_of_the_journal_is_an_error_naming_the_file(tmp_path):
    _run(tmp_path, _FakeTrain())
    path = tmp_path / "t.journal"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:2] + [b'{"op_code": 4, "trial_id'] + lines[2:]))
    with pytest.raises(sw.StorageError, match=rf"{path}: line 3 is damaged"):
        _run(tmp_path, _FakeTrain())


def test_a_reused_name_with_other_data_or_seed_is_an_error_saying_how_to_start_a_new_study(tmp_path):
    _run(tmp_path, _FakeTrain())
    for splits, seed in ((_tiny_splits(seed=1), 0), (_tiny_splits(), 1)):  # other data; other initial weights
        other = _FakeTrain()
        with pytest.raises(ValueError, match="other data, model or seed.*start a new study with another name="):
            sw.sweep(CONFIGS, splits, _tiny_model, results_dir=tmp_path, name="t", train_fn=other,
                     seed=seed, workers=1, save_checkpoints=False, progress=None)
        assert other.calls == []
    other = _FakeTrain()
    sw.sweep(CONFIGS, _tiny_splits(seed=1), _tiny_model, results_dir=tmp_path, name="t2", train_fn=other,
             seed=0, workers=1, save_checkpoints=False, progress=None)  # a new study trains them all
    assert len(other.calls) == len(CONFIGS)
    more = [{**CONFIGS[0], "lr": 0.3}]  # adding configurations to an existing study is fine
    assert len(_run(tmp_path, _FakeTrain(), configs=CONFIGS + more)) == len(CONFIGS) + 1


def test_every_config_starts_from_the_same_weights(tmp_path):
    results = _run(tmp_path, _FakeTrain())
    sums = {r["final"]["val_loss"] for r in results}  # the fake reports the initial weights' sum here
    assert len(sums) == 1
    assert results[0]["context"]["data"] == "tiny synthetic test data"


# ---------------------------------------------------------------- selection


def _record(acc, loss, name):
    return {"final": {"val_acc": acc, "val_loss": loss}, "label": name}


def test_select_best_by_val_acc_then_val_loss():
    records = [_record(0.80, 0.30, "a"), _record(0.85, 0.50, "b"), _record(0.85, 0.40, "c"), _record(0.70, 0.1, "d")]
    assert sw.select_best(records)["label"] == "c"
    assert [r["label"] for r in sw.sort_results(records)] == ["c", "b", "a", "d"]


def test_select_best_ranks_diverged_runs_last_and_keeps_first_of_full_ties():
    nan = float("nan")
    records = [_record(nan, nan, "diverged"), _record(0.5, 0.69, "x"), _record(0.5, 0.69, "y")]
    assert sw.select_best(records)["label"] == "x"
    assert sw.sort_results(records)[-1]["label"] == "diverged"
    with pytest.raises(ValueError, match="no results"):
        sw.select_best([])


# ---------------------------------------------------------------- parallel == serial


def test_parallel_equals_serial_with_real_training(tmp_path):
    configs = [{"lr": 0.05, "momentum": m, "weight_decay": 1e-3, "epochs": 2, "batch_size": 16} for m in (0.0, 0.9)]
    kw = dict(results_dir=tmp_path, seed=3, threads_per_worker=1, progress=None)
    serial = sw.sweep(configs, _tiny_splits(), _tiny_model, name="serial", workers=1, **kw)
    parallel = sw.sweep(configs, _tiny_splits(), _tiny_model, name="parallel", workers=2, **kw)
    for s, p in zip(serial, parallel):
        assert s["key"] == p["key"] and s["threads"] == p["threads"] == 1
        for k in ("train_loss", "train_acc", "val_loss", "val_acc"):
            assert s["history"][k] == p["history"][k]  # exact, not approximately
    assert serial[0]["history"]["val_loss"] != serial[1]["history"]["val_loss"]  # the configs did differ
    for s, p in zip(serial, parallel):
        a = torch.load(tmp_path / "serial-checkpoints" / s["checkpoint"], weights_only=True)
        b = torch.load(tmp_path / "parallel-checkpoints" / p["checkpoint"], weights_only=True)
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_worker_counts_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="workers=-1"):
        _run(tmp_path, _FakeTrain(), workers=-1)
    with pytest.raises(ValueError, match="threads_per_worker=-1"):
        _run(tmp_path, _FakeTrain(), threads_per_worker=-1)



def test_selected_model_from_checkpoint_equals_retraining(tmp_path):
    configs = [{"lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "epochs": 2, "batch_size": 16}]
    splits = _tiny_splits()
    kw = dict(name="sel", results_dir=tmp_path, seed=5)
    (record,) = sw.sweep(configs, splits, _tiny_model, workers=1, threads_per_worker=1, progress=None, **kw)
    loaded, how = sw.selected_model(record, splits, _tiny_model, **kw)
    assert how == "checkpoint"
    (tmp_path / "sel-checkpoints" / record["checkpoint"]).unlink()
    retrained, how = sw.selected_model(record, splits, _tiny_model, **kw)
    assert how == "retrained"
    for (name, a), (_, b) in zip(loaded.state_dict().items(), retrained.state_dict().items()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="other data, model or seed"):
        sw.selected_model(record, splits, _tiny_model, name="sel", results_dir=tmp_path, seed=6)


def test_results_table_is_sorted_best_first(tmp_path):
    results = _run(tmp_path, _FakeTrain())
    lines = sw.results_table(results).splitlines()
    assert len(lines) == 2 + len(results)
    best = sw.select_best(results)
    assert lines[2].split()[0] == "1" and best["label"] in lines[2]


# ---------------------------------------------------------------- named models and data options (notebook 06)


def _tiny_digits(n=72, seed=0):
    """DataSplits of random 1x28x28 'digits' with ten classes, the shape of notebook 06's models."""
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.arange(n) % 10
    cut, classes = (0, n // 2, 3 * n // 4, n), tuple("0123456789")
    splits = [Split(x[a:b], y[a:b], classes, name) for a, b, name in zip(cut, cut[1:], ("train", "val", "test"))]
    return DataSplits(*splits, mean=torch.zeros(1), std=torch.ones(1), source="tiny random digits",
                      dataset="digits", classes=classes, seed=seed, quick=True, val_fraction=0.25)


ZOO = [
    {"model": "softmax", "variant": "plain", "lr": 0.05, "epochs": 2, "batch_size": 8, "schedule": "onecycle",
     "momentum": 0.9, "nesterov": True, "n_train": 20},
    {"model": "mlp", "variant": "dropout", "lr": 0.05, "epochs": 2, "batch_size": 8, "augment": "online"},
    {"model": "lenet", "variant": "batchnorm", "lr": 0.05, "epochs": 1, "batch_size": 8, "augment": "double"},
    {"model": "lenet", "variant": "plain", "lr": 0.05, "epochs": 1, "batch_size": 8, "momentum": 0.9},
]


def _weights(folder, name, record):
    return torch.load(folder / f"{name}-checkpoints" / record["checkpoint"], weights_only=True)


def test_named_models_in_two_workers_equal_a_serial_run_parameter_for_parameter(tmp_path):
    kw = dict(results_dir=tmp_path, seed=2, threads_per_worker=1, progress=None)
    serial = sw.sweep(ZOO, _tiny_digits(), name="serial", workers=1, **kw)
    parallel = sw.sweep(ZOO, _tiny_digits(), name="parallel", workers=2, **kw)
    for s, p in zip(serial, parallel):
        assert s["key"] == p["key"] and s["history"]["val_loss"] == p["history"]["val_loss"]
        a, b = _weights(tmp_path, "serial", s), _weights(tmp_path, "parallel", p)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), s["label"]
    assert [r["context"]["model"].split("(")[0] for r in serial] == ["SoftmaxRegression", "MLP", "LeNet5", "LeNet5"]
    assert serial[0]["history"]["lr"][0] == pytest.approx(0.05 / 25)  # one-cycle starts at max_lr / 25
    assert "augment=double" in serial[2]["label"] and serial[0]["config"]["momentum"] == 0.9
    resumed = sw.sweep(ZOO, _tiny_digits(), name="parallel", workers=2, train_fn=_FakeTrain(fail_at=0), **kw)
    assert resumed == parallel  # nothing retrained


def test_configs_of_one_model_share_initial_weights_and_data_options_change_the_data():
    splits = _tiny_digits()
    job = sw._make_job(splits, None, 0, None, sw.validate_configs(ZOO))
    assert sorted(job.inits) == ["lenet/batchnorm", "lenet/plain", "mlp/dropout", "softmax/plain"]
    again = sw._make_job(splits, None, 0, None, sw.validate_configs(ZOO[3:]))
    assert all(torch.equal(v, again.inits["lenet/plain"][k]) for k, v in job.inits["lenet/plain"].items())
    sub = sw.training_data(splits, sw.canonical_config(ZOO[0]), seed=0)
    assert len(sub.train) == 20 and torch.equal(sub.train.x, sw.training_data(splits, ZOO[0], seed=0).train.x)
    doubled = sw.training_data(splits, sw.canonical_config(ZOO[2]), seed=0).train
    n = len(splits.train)
    assert len(doubled) == 2 * n and torch.equal(doubled.x[:n], splits.train.x)
    assert torch.equal(doubled.y[n:], splits.train.y) and not torch.equal(doubled.x[n:], splits.train.x)


def test_a_model_fn_that_workers_cannot_import_gets_a_clear_error(tmp_path):
    # Workers are `python -m helpers.sweep work` processes: they never import the caller's script (no main guard
    # needed), so what they run must come from a module, not from a notebook cell or a lambda.
    fake = _FakeTrain()
    with pytest.raises(sw.JobError, match="cannot reach worker processes.*define it in a module, or workers=1"):
        sw.sweep(CONFIGS, _tiny_splits(), lambda: CIFAR2MLP(sizes=(48, 8, 2)), results_dir=tmp_path, name="t",
                 workers=2, train_fn=fake, progress=None)
    assert fake.calls == []


class _DieInWorker:
    """Trains nothing; a worker process (not the parent) dies abruptly, as if killed for memory."""

    def __init__(self):
        self.parent = os.getpid()

    def __call__(self, model, splits, config, seed):
        if os.getpid() != self.parent:
            os._exit(3)
        time.sleep(1.0)  # slow enough here that the worker gets trials
        e = config["epochs"]
        return {"train_loss": [1.0] * e, "train_acc": [0.5] * e, "val_loss": [1.0] * e, "val_acc": [0.5] * e}


def test_a_dying_worker_s_trial_is_failed_and_queued_again_and_nothing_is_lost(tmp_path):
    results = _run(tmp_path, _DieInWorker(), workers=2)
    assert len(results) == len(CONFIGS)
    trials = _study(tmp_path).get_trials()
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all("error" not in t.user_attrs and t.user_attrs["pid"] != os.getpid() for t in failed)
    complete = [t.user_attrs["key"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == sorted(r["key"] for r in results)  # every config complete exactly once


def test_a_configuration_whose_training_raises_is_failed_once_and_reported(tmp_path):
    def train_fn(model, splits, config, seed):
        if config["lr"] == 0.05 and config["weight_decay"] == 0:
            raise FloatingPointError("boom in training")
        return _FakeTrain()(model, splits, config, seed)
    with pytest.raises(RuntimeError, match=r"1 configuration\(s\) did not complete:\nlr=0.05 m=0.9 wd=0: its "
                                           r"training raised\n(.|\n)*FloatingPointError: boom in training"):
        _run(tmp_path, train_fn)
    trials = _study(tmp_path).get_trials()
    assert len(trials) == len(CONFIGS)  # not retried
    assert sum(t.state == optuna.trial.TrialState.FAIL for t in trials) == 1


def test_a_config_whose_worker_dies_is_retried_at_most_twice_then_named(tmp_path):
    sw.sweep(CONFIGS[:1], _tiny_splits(), _tiny_model, results_dir=tmp_path, name="t", workers=0, progress=None)
    study = _study(tmp_path)
    for attempt in range(3):
        trial = study.ask()
        assert trial.user_attrs["attempt"] == attempt
        sw._requeue(study, study.get_trials()[trial.number])  # as if its worker had died
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))  # the third death: not queued again
    by_key = sw._by_key(study)
    with pytest.raises(RuntimeError, match="lr=0.01 m=0.9 wd=0: failed 3 times"):
        sw._raise_failed(list(by_key), {}, by_key)


def test_workers_0_only_fills_the_queue_and_returns_what_is_complete(tmp_path):
    assert _run(tmp_path, _FakeTrain(), configs=CONFIGS[:2]) and True
    fake = _FakeTrain()
    records = _run(tmp_path, fake, workers=0)
    assert fake.calls == [] and len(records) == 2
    assert len(_study(tmp_path).get_trials(states=(optuna.trial.TrialState.WAITING,))) == len(CONFIGS) - 2


def test_a_diverged_run_is_a_complete_trial_with_a_number(tmp_path):
    def diverge(model, splits, config, seed):
        e = config["epochs"]
        return {"train_loss": [float("nan")] * e, "train_acc": [0.5] * e, "val_loss": [float("nan")] * e,
                "val_acc": [float("nan")] * e}
    (record,) = _run(tmp_path, diverge, configs=CONFIGS[:1])
    (trial,) = _study(tmp_path).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == 0.0 and trial.user_attrs["diverged"]
    assert record["final"]["val_loss"] != record["final"]["val_loss"]  # NaN kept in the record


def test_unreachable_storage_is_one_clear_error_with_the_password_masked(tmp_path, monkeypatch, capsys):
    import socket

    silent = socket.socket()  # accepts connections (the kernel's backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    url = f"postgresql+psycopg://teacher:s3cret@127.0.0.1:{silent.getsockname()[1]}/course"
    start = time.monotonic()
    with pytest.raises(sw.StorageError) as err:
        sw.sweep(ZOO, replace(_tiny_digits(), dataset="mnist"), name="t", storage=url, workers=0, progress=None)
    assert time.monotonic() - start < 10
    assert "teacher:***@127.0.0.1" in str(err.value) and "s3cret" not in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__
    port = silent.getsockname()[1]
    silent.close()
    monkeypatch.setenv("HELPERS_SWEEP_STORAGE", url.replace(f":{port}/", ":1/"))  # refused at once
    assert sw.main(["work", "--study", "t"]) != 0  # what `python -m helpers.sweep work` exits with
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "teacher:***@127.0.0.1:1/course" in err and "s3cret" not in err


def test_storage_choices_that_cannot_work_are_refused_before_any_training(tmp_path):
    fake = _FakeTrain()
    with pytest.raises(sw.StorageError, match="SQLite is not for several processes"):
        _run(tmp_path, fake, storage=f"sqlite:///{tmp_path}/t.db", workers=2)
    with pytest.raises(sw.JobError, match="a database storage serves workers on other machines.*model_fn"):
        _run(tmp_path, fake, storage="postgresql+psycopg://u:pw@127.0.0.1:1/db", workers=0)
    assert fake.calls == []
    assert len(_run(tmp_path, fake, storage=f"sqlite:///{tmp_path}/t.db", workers=1)) == len(CONFIGS)


def test_a_worker_on_a_missing_or_empty_study_says_so_and_exits_0(tmp_path, capsys):
    assert sw.main(["work", "--study", "none", "--storage", str(tmp_path / "none.journal")]) == 0
    assert "no study 'none'" in capsys.readouterr().out
    _run(tmp_path, _FakeTrain())
    assert sw.main(["work", "--study", "t", "--storage", str(tmp_path / "t.journal")]) == 0
    assert "no queued trials" in capsys.readouterr().out
