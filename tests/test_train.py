"""helpers.train: the shared training loop, evaluation, prediction and confusion matrix."""

import pytest
import torch
from torch import nn

from helpers.data import DataSplits, Split
from helpers.train import calibration, confusion_matrix, evaluate, most_confident_mistakes, predict, train


def _splits(n=240, seed=0):
    """Two Gaussian blobs in 2-D, shaped N x 1 x 1 x 2 like tiny images."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.randn(n, 1, 1, 2, generator=g) + (2.0 * y - 1.0).view(-1, 1, 1, 1) * 1.5
    classes = ("a", "b")
    parts = [Split(x[i::3].contiguous(), y[i::3].contiguous(), classes, name)
             for i, name in enumerate(("train", "val", "test"))]
    return DataSplits(*parts, mean=torch.zeros(1), std=torch.ones(1), source="synthetic test blobs",
                      dataset="blobs", classes=classes, seed=seed, quick=True, val_fraction=1 / 3)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 2))


def _fit(seed=0, batch_seed=0, epochs=3, **kw):
    model = _model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    hist = train(model, _splits(), opt, epochs, batch_size=16, seed=batch_seed, device="cpu", progress=False, **kw)
    return model, hist


def test_history_has_every_metric_per_epoch_and_learns():
    _, hist = _fit(epochs=4)
    assert set(hist) == {"train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert all(len(v) == 4 for v in hist.values())
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist["val_acc"][-1] > 0.85


def test_same_seed_same_weights_other_seed_other_order():
    a, ha = _fit(batch_seed=5)
    b, hb = _fit(batch_seed=5)
    c, _ = _fit(batch_seed=6)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert ha["train_loss"] == hb["train_loss"]
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))


def test_on_epoch_sees_each_epoch_and_can_stop_the_run():
    seen = []
    _, hist = _fit(epochs=3, on_epoch=lambda epoch, h: seen.append((epoch, h["val_acc"][-1])))
    assert seen == list(enumerate(hist["val_acc"], start=1))

    class Stop(Exception):
        pass

    def stop_after_two(epoch, history):
        if epoch == 2:
            raise Stop  # as a pruner's optuna.TrialPruned would
    with pytest.raises(Stop):
        _fit(epochs=5, on_epoch=stop_after_two)


def test_eval_split_names_the_keys():
    _, hist = _fit(epochs=1, eval_split="test")
    assert "test_acc" in hist and "val_acc" not in hist


def test_scheduler_steps_per_epoch_or_per_batch():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    hist = train(model, _splits(), opt, 3, batch_size=16, scheduler=sched, progress=False)
    assert hist["lr"] == [1.0, 0.5, 0.25]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    train(model, _splits(), opt, 1, batch_size=16, scheduler=sched, step_scheduler="batch", progress=False)
    assert sched.last_epoch == len(_splits().train) // 16 + (len(_splits().train) % 16 > 0)


def test_evaluate_matches_a_direct_computation_and_restores_mode():
    model, _ = _fit(epochs=1)
    model.train()
    split = _splits().val
    loss, acc = evaluate(model, split, batch_size=7)
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(split.x)
    assert loss == pytest.approx(nn.functional.cross_entropy(logits, split.y).item(), rel=1e-6)
    assert acc == pytest.approx((logits.argmax(1) == split.y).float().mean().item())
    probs = predict(model, split)
    assert probs.shape == (len(split), 2)
    assert torch.allclose(probs.sum(1), torch.ones(len(split)))


@pytest.mark.parametrize("kw, match", [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"),
                                        ({"eval_split": "dev"}, "eval_split"),
                                        ({"step_scheduler": "step"}, "step_scheduler")])
def test_bad_arguments_are_clear_errors(kw, match):
    model = _model()
    args = {"epochs": 1, "batch_size": 8} | kw
    with pytest.raises(ValueError, match=match):
        train(model, _splits(), torch.optim.SGD(model.parameters(), lr=0.1), progress=False, **args)


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    cm = confusion_matrix(torch.tensor([0, 0, 1, 2, 2, 2]), torch.tensor([0, 1, 1, 2, 0, 2]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0]), 2)


def test_augment_changes_every_training_batch_and_only_those():
    seen = []

    def augment(x):
        seen.append(len(x))
        return x + 0.0

    _, plain = _fit(epochs=2)
    _, hist = _fit(epochs=2, augment=augment)
    assert sum(seen) == 2 * len(_splits().train)
    assert hist["train_loss"] == plain["train_loss"]  # an identity augmentation changes nothing


def test_most_confident_mistakes():
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3], [0.05, 0.95]])
    y = torch.tensor([1, 1, 0, 0, 0])
    assert most_confident_mistakes(probs, y, 10).tolist() == [4, 0, 2]
    assert most_confident_mistakes(probs, y, 2).tolist() == [4, 0]
    with pytest.raises(ValueError, match="probs must be N x C"):
        most_confident_mistakes(probs, y[:3], 2)


def test_calibration_bins_and_expected_calibration_error():
    probs = torch.tensor([[0.95, 0.05], [0.9, 0.1], [0.35, 0.65], [0.42, 0.58]])
    y = torch.tensor([0, 1, 1, 0])  # 0.95 right, 0.9 wrong, 0.65 right, 0.58 wrong
    cal = calibration(probs, y, n_bins=2)  # bins (0, 0.5], (0.5, 1]: all four in the second
    assert cal["count"] == [0, 4] and cal["accuracy"][1] == 0.5
    assert cal["confidence"][1] == pytest.approx((0.95 + 0.9 + 0.65 + 0.58) / 4)
    assert cal["ece"] == pytest.approx((0.95 + 0.9 + 0.65 + 0.58) / 4 - 0.5)
    cal = calibration(probs, y, n_bins=10)  # 0.58, 0.65 in (0.5, 0.6], (0.6, 0.7]; 0.9, 0.95 in the top two
    assert cal["count"] == [0, 0, 0, 0, 0, 1, 1, 0, 1, 1]
    assert cal["ece"] == pytest.approx((0.58 + 0.35 + 0.9 + 0.05) / 4)
    with pytest.raises(ValueError, match="n_bins"):
        calibration(probs, y, n_bins=0)
