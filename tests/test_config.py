"""helpers.config: settings parsing, seeding, the run header and run records."""

import json

import numpy as np
import pytest
import torch

from helpers import config
from helpers.config import SettingsError, read_settings


def test_defaults_point_into_the_repo():
    s = read_settings({})
    assert s.quick is False
    assert s.seed == 0
    assert s.data_source == "auto"
    assert s.data_dir == config.REPO_ROOT / "data"
    assert s.figures_dir == config.REPO_ROOT / "figures"
    assert s.device.type in ("cpu", "cuda")


def test_quick_mode_writes_figures_to_a_scratch_folder():
    s = read_settings({"HELPERS_QUICK": "1"})
    assert s.quick and s.mode == "quick"
    assert s.figures_dir != config.REPO_ROOT / "figures"
    assert "build" in s.figures_dir.parts


def test_explicit_dirs_and_seed(tmp_path):
    s = read_settings({"HELPERS_DATA_DIR": str(tmp_path / "d"), "HELPERS_FIGURES_DIR": str(tmp_path / "f"),
                       "HELPERS_SEED": " 42 ", "HELPERS_DEVICE": "cpu", "HELPERS_DATA_SOURCE": "OFFLINE"})
    assert s.data_dir == tmp_path / "d"
    assert s.figures_dir == tmp_path / "f"
    assert s.seed == 42
    assert s.device == torch.device("cpu")
    assert s.data_source == "offline"


@pytest.mark.parametrize("raw", ["abc", "1.5", "", "-1"])
def test_bad_seed_is_a_clear_error(raw):
    with pytest.raises(SettingsError, match="HELPERS_SEED"):
        read_settings({"HELPERS_SEED": raw})


def test_unknown_device_lists_valid_choices():
    with pytest.raises(SettingsError, match="valid choices: cpu, cuda"):
        read_settings({"HELPERS_DEVICE": "tpu"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(SettingsError, match="CUDA is not available.*valid choices"):
        read_settings({"HELPERS_DEVICE": "cuda"})


def test_bad_quick_flag_and_data_source():
    with pytest.raises(SettingsError, match="HELPERS_QUICK"):
        read_settings({"HELPERS_QUICK": "maybe"})
    with pytest.raises(SettingsError, match="auto, real, offline"):
        read_settings({"HELPERS_DATA_SOURCE": "internet"})


def test_mnist_dataset_switch():
    assert read_settings({}).mnist_dataset == "mnist"
    assert read_settings({"HELPERS_MNIST_DATASET": " Fashion_MNIST "}).mnist_dataset == "fashion_mnist"
    with pytest.raises(SettingsError, match="HELPERS_MNIST_DATASET.*mnist, fashion_mnist"):
        read_settings({"HELPERS_MNIST_DATASET": "kmnist"})


def test_progress_setting(monkeypatch):
    assert read_settings({}).progress is None
    assert read_settings({"HELPERS_PROGRESS": "0"}).progress is False
    assert read_settings({"HELPERS_PROGRESS": "1"}).progress is True
    with pytest.raises(SettingsError, match="HELPERS_PROGRESS.*auto, 1, 0"):
        read_settings({"HELPERS_PROGRESS": "sometimes"})
    monkeypatch.setattr(config, "settings", lambda: read_settings({"HELPERS_PROGRESS": "0"}))
    assert config.show_progress() is False
    assert config.show_progress(True) is True  # an explicit argument wins
    monkeypatch.setattr(config, "settings", lambda: read_settings({"HELPERS_PROGRESS": "1"}))
    assert config.show_progress() is True


def test_seed_everything_makes_draws_repeat():
    config.seed_everything(123)
    a = (torch.rand(3), np.random.rand(3))
    config.seed_everything(123)
    b = (torch.rand(3), np.random.rand(3))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_run_header_is_one_line_with_versions():
    line = config.run_header(read_settings({"HELPERS_SEED": "7", "HELPERS_QUICK": "1"}))
    assert "\n" not in line
    for part in ("mode=quick", "seed=7", f"torch {torch.__version__}", f"numpy {np.__version__}", "device="):
        assert part in line


def test_run_record_holds_settings_versions_and_payload(tmp_path):
    s = read_settings({"HELPERS_FIGURES_DIR": str(tmp_path)})
    path = config.write_run_record("01_test", {"data": "none", "metrics": {"loss": 0.5}}, s)
    rec = json.loads(path.read_text())
    assert rec["metrics"] == {"loss": 0.5}
    assert rec["versions"]["torch"] == torch.__version__
    assert rec["settings"]["seed"] == 0
    assert rec["settings"]["torch_threads"] == torch.get_num_threads()
    with pytest.raises(ValueError, match="plain file stem"):
        config.write_run_record("../escape", {}, s)


def test_nbgrader_execution_means_quick_silent_and_isolated():
    from helpers.config import read_settings

    s = read_settings({"NBGRADER_EXECUTION": "autograde"})
    assert s.quick and s.progress is False
    assert s.results_dir != read_settings({"NBGRADER_EXECUTION": "autograde"}).results_dir  # fresh each time
    assert "helpers-grading-" in str(s.results_dir) and s.figures_dir.parent == s.results_dir.parent
    override = read_settings({"NBGRADER_EXECUTION": "validate", "HELPERS_QUICK": "0", "HELPERS_PROGRESS": "1",
                              "HELPERS_RESULTS_DIR": "/tmp/r"})
    assert not override.quick and override.progress is True and str(override.results_dir) == "/tmp/r"
    plain = read_settings({})
    assert not plain.quick and plain.results_dir.name == "results"
