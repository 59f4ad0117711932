"""helpers.sweep across processes: workers started by hand in other folders share one study, on a private
PostgreSQL server and on a journal file; kill -9 of a worker or of the sweep's own process loses nothing and
leaves no process behind."""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch

from helpers import sweep as sw
from helpers.data import load_dataset

TESTS, REPO = Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]
INSTALL = "sudo apt-get install postgresql"
CONFIGS = [{"model": "softmax", "variant": "plain", "lr": lr, "epochs": 1, "n_train": 400, "batch_size": 64}
           for lr in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3)]


def slow_train(model, splits, config, seed):
    """``train_config`` that first leaves a marker ``<HELPERS_TEST_MARKERS>/<pid>-<lr>`` and sleeps
    ``HELPERS_TEST_TRIAL_SECONDS`` (both unset: plain ``train_config``), so that a test can kill a worker mid-trial."""
    if folder := os.environ.get("HELPERS_TEST_MARKERS"):
        (Path(folder) / f"{os.getpid()}-{config['lr']}").touch()
    time.sleep(float(os.environ.get("HELPERS_TEST_TRIAL_SECONDS", "0")))
    return sw.train_config(model, splits, config, seed)


# ---------------------------------------------------------------- a private PostgreSQL server


def _postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: Debian's /usr/lib/postgresql/NN/bin (newest), else on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    found = found or list(filter(None, [shutil.which("initdb")]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """URL of a PostgreSQL server started for these tests in a temporary folder (as ``postgres`` when root),
    socket in that folder, on a free port; stopped at the end. Missing: skipped, but failed under CI=true."""
    bindir = _postgres_bin()
    if bindir is None:
        message = f"PostgreSQL (initdb, pg_ctl) is not installed; run '{INSTALL}' to run these tests."
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="helpers-postgres-"))
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root
        shutil.chown(folder, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", _free_port()
    run = lambda *args: subprocess.run([*as_user, *map(str, args)], check=True, capture_output=True, timeout=60)  # noqa: E731
    run(bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    run(bindir / "pg_ctl", "-D", data, "-l", folder / "server.log", "-w", "start", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["postgresql", "journal"])
def storage(request, tmp_path):
    """A PostgreSQL URL, or a journal file that every worker reaches by its absolute path."""
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "shared.journal")


# ---------------------------------------------------------------- helpers of the tests


def _env(storage: str, markers: Path | None = None, seconds: float = 0) -> dict:
    env = {**os.environ, "HELPERS_SWEEP_STORAGE": storage, "HELPERS_TEST_TRIAL_SECONDS": str(seconds),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)])}
    if markers:
        env["HELPERS_TEST_MARKERS"] = str(markers)
    return env


def _worker(name: str, folder: Path, env: dict) -> subprocess.Popen:
    """``python -m helpers.sweep work --study name`` in its own working folder (checkpoints there too)."""
    folder.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "helpers.sweep", "work", "--study", name, "--results-dir",
                             str(folder)], cwd=folder, env=env)


def _fill(name: str, storage: str, splits, **kw) -> list[dict]:
    return sw.sweep(CONFIGS, splits, name=name, storage=storage, workers=0, train_fn=slow_train,
                    threads_per_worker=1, seed=0, progress=None, **kw)


def _wait_for(predicate, timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie has exited; only its parent has not reaped it yet
        return f.read().split(") ")[-1].startswith("Z")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def serial(digits, tmp_path_factory):
    """The reference: every configuration trained here, one after another, with final weights."""
    folder = tmp_path_factory.mktemp("serial")
    records = sw.sweep(CONFIGS, digits, name="serial", results_dir=folder, workers=1, threads_per_worker=1, seed=0,
                       progress=None)
    return {r["key"]: (r, torch.load(folder / "serial-checkpoints" / r["checkpoint"], weights_only=True))
            for r in records}


def _assert_equal_to_serial(records, serial, folders, name):
    assert sorted(r["key"] for r in records) == sorted(serial)
    for r in records:
        reference, weights = serial[r["key"]]
        assert r["history"]["val_loss"] == reference["history"]["val_loss"], r["label"]
        (path,) = [p for f in folders if (p := f / f"{name}-checkpoints" / r["checkpoint"]).exists()]
        trained = torch.load(path, weights_only=True)
        assert all(torch.equal(trained[k], weights[k]) for k in weights), r["label"]


def _complete_by_key(study) -> dict[str, list]:
    by_key = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        by_key.setdefault(t.user_attrs["key"], []).append(t)
    return by_key


# ---------------------------------------------------------------- the tests


def test_two_workers_in_other_folders_share_one_study_and_equal_a_serial_run(storage, digits, serial, tmp_path):
    name = f"shared_{tmp_path.name}"  # one PostgreSQL database serves every test: one study name each
    assert _fill(name, storage, digits) == []  # workers=0: only the queue is filled
    folders = [tmp_path / "a", tmp_path / "b"]
    workers = [_worker(name, f, _env(storage, seconds=0.6)) for f in folders]
    assert [w.wait(timeout=120) for w in workers] == [0, 0]
    records = _fill(name, storage, digits)  # now every record is complete
    study = optuna.load_study(study_name=name, storage=sw.open_storage(storage))
    by_key = _complete_by_key(study)
    assert sorted(by_key) == sorted(serial) and all(len(ts) == 1 for ts in by_key.values())  # each exactly once
    per_worker = {w.pid: sum(t.user_attrs["pid"] == w.pid for ts in by_key.values() for t in ts) for w in workers}
    print(f"{storage.split(':')[0]}: trials per worker {sorted(per_worker.values())}")
    assert all(n >= 1 for n in per_worker.values()), per_worker
    _assert_equal_to_serial(records, serial, folders, name)


def test_kill_9_of_a_worker_mid_trial_retries_its_trial_and_loses_nothing(storage, digits, serial, tmp_path):
    name = f"killed_{tmp_path.name}"
    _fill(name, storage, digits)
    markers = tmp_path / "markers"
    markers.mkdir()
    victim = _worker(name, tmp_path / "victim", _env(storage, markers, seconds=60))
    _wait_for(lambda: any(markers.iterdir()), 60, "the worker to start a trial")
    victim.kill()
    victim.wait()
    records = sw.sweep(CONFIGS, digits, name=name, storage=storage, results_dir=tmp_path / "here", workers=2,
                       train_fn=slow_train, threads_per_worker=1, seed=0, progress=None)
    study = optuna.load_study(study_name=name, storage=sw.open_storage(storage))
    killed = [t for t in study.get_trials() if t.user_attrs.get("pid") == victim.pid]
    assert [t.state for t in killed] == [optuna.trial.TrialState.FAIL]
    by_key = _complete_by_key(study)
    assert all(len(ts) == 1 for ts in by_key.values()) and len(by_key) == len(CONFIGS)
    assert by_key[killed[0].user_attrs["key"]][0].user_attrs["attempt"] == 1  # the retry
    _assert_equal_to_serial(records, serial, [tmp_path / "here"], name)


def test_no_worker_outlives_the_sweep_s_process_by_more_than_its_trial_plus_5_s(tmp_path, how="kill -9"):
    # how="Ctrl-C" (SIGINT) passes too; left out of the suite for time: the worker abandons its trial.
    trial_seconds, markers = 2.0, tmp_path / "markers"
    markers.mkdir()
    code = ("import test_sweep_cluster as c; from helpers.data import load_dataset; from helpers import sweep as sw; "
            f"sw.sweep(c.CONFIGS, load_dataset('mnist'), name='t', results_dir={str(tmp_path)!r}, workers=2, "
            "threads_per_worker=1, train_fn=c.slow_train, progress=None)")
    env = _env(str(tmp_path / "t.journal"), markers, trial_seconds)
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
    pids = lambda: {int(p.name.split("-")[0]) for p in markers.iterdir()} - {parent.pid}  # noqa: E731
    _wait_for(lambda: len(pids()) == 1, 90, "the worker to start a trial")
    workers, start = pids(), time.monotonic()
    parent.send_signal(signal.SIGKILL if how == "kill -9" else signal.SIGINT)
    _wait_for(lambda: all(map(_gone, workers)), 60, "the workers to exit")
    seconds = time.monotonic() - start
    parent.wait(timeout=30)
    study = optuna.load_study(study_name="t", storage=sw.open_storage(str(tmp_path / "t.journal")))
    theirs = [t for t in study.get_trials() if t.user_attrs.get("pid") in workers]
    if how == "kill -9":  # the worker finished the trial it was in, and started no other
        assert len(theirs) == 1 and all(t.state == optuna.trial.TrialState.COMPLETE for t in theirs)
        trial = max(t.user_attrs["record"]["seconds"] for t in theirs)  # an upper bound of what was left
    else:  # it abandoned its trial, which went back to the queue
        assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        assert len(theirs) == 1 and all(t.state == optuna.trial.TrialState.FAIL for t in theirs)
        trial = 0.0
    print(f"{how}: the last worker exited {seconds:.1f} s after the sweep's process (its trial: {trial:.1f} s)")
    assert seconds <= trial + 5
    records = sw.sweep(CONFIGS, load_dataset("mnist"), name="t", results_dir=tmp_path, workers=1,
                       threads_per_worker=1, train_fn=slow_train, progress=None)
    assert len(records) == len(CONFIGS)  # the rerun re-queues what the dead parent left running
