"""helpers.plotting: deterministic export, quick-mode scratch folder, figure helpers."""

import time

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import config, plotting  # noqa: E402


@pytest.fixture
def figures_dir(tmp_path, monkeypatch):
    s = config.read_settings({"HELPERS_FIGURES_DIR": str(tmp_path)})
    monkeypatch.setattr(plotting, "settings", lambda: s)
    return tmp_path


def _figure():
    fig, ax = plt.subplots()
    ax.plot(np.arange(10), np.arange(10) ** 2, label="squares")
    ax.set_title("a title")
    ax.legend()
    return fig


def test_savefig_is_byte_identical_across_runs_in_every_format(figures_dir):
    paths = plotting.savefig(_figure(), "00_demo")
    first = [p.read_bytes() for p in paths]
    time.sleep(1.1)  # a creation date in seconds would now differ
    second = [p.read_bytes() for p in plotting.savefig(_figure(), "00_demo")]
    assert [p.name for p in paths] == ["00_demo.png", "00_demo.svg", "00_demo.pdf"]
    for path, a, b in zip(paths, first, second):
        assert a == b, path.name
    assert first[2].startswith(b"%PDF") and b"CreationDate" not in first[2]
    assert "<dc:date>" not in first[1].decode()
    plt.close("all")


def test_sweep_and_reliability_figures():
    records = [{"key": k, "label": k, "history": {"val_acc": [0.5, 0.6], "val_loss": [0.7, 0.6]},
                "final": {"train_acc": 0.7, "val_acc": 0.6}} for k in ("a", "b")]
    fig = plotting.plot_sweep_curves(records, title="t", highlight="b")
    assert [line.get_linewidth() for line in fig.axes[0].lines] == [1.1, 2.8]
    fig = plotting.plot_generalization_gap(records)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b"]
    cal = {"confidence": [float("nan"), 0.7], "accuracy": [float("nan"), 0.5], "count": [0, 4], "ece": 0.2}
    fig = plotting.plot_reliability(cal)
    assert fig.axes[0].get_title() == "ECE = 0.200"
    plt.close("all")


def test_search_progress_counts_pruned_epochs_and_keeps_the_best():
    best, epochs = plotting.best_so_far([(None, 2), (0.6, 5), (None, 1), (0.7, 5), (0.65, 5)])
    assert np.isnan(best[0]) and best[1:].tolist() == [0.6, 0.6, 0.7, 0.7]
    assert epochs.tolist() == [2, 7, 8, 13, 18]
    fig = plotting.plot_search_progress({"grid": [(0.5, 5)], "random": [(None, 2), (0.6, 5)]}, title="t")
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 2
    plt.close(fig)


def test_savefig_rejects_paths(figures_dir):
    with pytest.raises(ValueError, match="plain file stem"):
        plotting.savefig(_figure(), "../x")
    plt.close("all")


def test_quick_mode_never_targets_committed_figures():
    quick = config.read_settings({"HELPERS_QUICK": "1"})
    assert quick.figures_dir != config.REPO_ROOT / "figures"


def test_plot_curves_one_panel_per_metric():
    hist = {"train_loss": [3, 2, 1], "val_loss": [3, 2.5, 2], "train_acc": [0.1, 0.5, 0.9], "val_acc": [0.1, 0.4, 0.7]}
    fig = plotting.plot_curves(hist)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "acc"]
    assert len(fig.axes[0].lines) == 2
    fig = plotting.plot_curves({"a": hist, "b": hist}, metrics=["acc"])
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == 4
    with pytest.raises(ValueError, match="no series"):
        plotting.plot_curves({})
    plt.close("all")


def test_confusion_and_image_grid_check_shapes():
    fig = plotting.plot_confusion(np.array([[5, 1], [2, 7]]), ["a", "b"])
    assert len(fig.axes[0].texts) == 4
    with pytest.raises(ValueError, match="2x2"):
        plotting.plot_confusion(np.ones((3, 3), int), ["a", "b"])
    fig = plotting.image_grid(np.random.rand(5, 3, 8, 8), titles=list("abcde"), ncols=3)
    assert sum(ax.get_title() != "" for ax in fig.axes) == 5
    with pytest.raises(ValueError, match="titles"):
        plotting.image_grid(np.random.rand(2, 8, 8), titles=["x"])
    plt.close("all")
