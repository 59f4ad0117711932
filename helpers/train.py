"""The one training loop of the series (the same seed gives the same run), evaluation and prediction."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.std import tqdm

from helpers.config import settings, show_progress
from helpers.data import batches

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train(model: nn.Module, splits, optimizer: torch.optim.Optimizer, epochs: int, batch_size: int = 128,
          seed: int | None = None, loss_fn: LossFn = F.cross_entropy, scheduler=None, device=None,
          eval_split: str = "val", progress: bool | None = None, step_scheduler: str = "epoch",
          augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
          on_epoch: Callable[[int, dict[str, list[float]]], None] | None = None) -> dict[str, list[float]]:
    """Train ``model`` on ``splits.train`` (epoch ``e`` shuffled with seed ``seed + e``; ``augment``: batch -> batch).
    Per-epoch lists: ``train_loss``, ``train_acc`` (running means, train mode), ``<eval_split>_loss``,
    ``<eval_split>_acc`` (on ``splits.<eval_split>``, eval mode), ``lr`` (at the epoch's start), ``seconds``.
    ``on_epoch(epoch, history)`` runs after each epoch (1-based), e.g. to report to a pruner; it may raise to stop."""
    check_count("epochs", epochs)
    check_count("batch_size", batch_size)
    if eval_split not in ("val", "test", "train"):
        raise ValueError(f"eval_split={eval_split!r} must be 'val', 'test' or 'train'.")
    if not hasattr(splits, "train") or not hasattr(splits, eval_split):
        raise ValueError(f"splits must be a helpers.data.DataSplits with .train and .{eval_split}; "
                         f"got {type(splits).__name__}.")
    if step_scheduler not in ("epoch", "batch"):
        raise ValueError(f"step_scheduler={step_scheduler!r} must be 'epoch' or 'batch'.")
    seed = settings().seed if seed is None else seed
    device = torch.device(device) if device is not None else settings().device
    model.to(device)
    keys = ("train_loss", "train_acc", f"{eval_split}_loss", f"{eval_split}_acc", "lr", "seconds")
    history = {k: [] for k in keys}
    bar = tqdm(range(epochs), desc="epochs", unit="epoch", disable=not show_progress(progress), leave=False)
    for epoch in bar:
        start, lr = time.perf_counter(), optimizer.param_groups[0]["lr"]
        model.train()
        total_loss = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for x, y in batches(splits.train, batch_size, shuffle=True, seed=seed + epoch):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            optimizer.zero_grad()
            logits = model(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimizer.step()
            if scheduler is not None and step_scheduler == "batch":
                scheduler.step()
            total_loss += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
        if scheduler is not None and step_scheduler == "epoch":
            scheduler.step()
        n = len(splits.train)
        eval_loss, eval_acc = evaluate(model, getattr(splits, eval_split), loss_fn=loss_fn, device=device)
        values = (total_loss.item() / n, correct.item() / n, eval_loss, eval_acc, lr, time.perf_counter() - start)
        for key, value in zip(keys, values):
            history[key].append(value)
        bar.set_postfix(loss=f"{values[0]:.4f}", **{f"{eval_split}_acc": f"{eval_acc:.4f}"})
        if on_epoch is not None:
            on_epoch(epoch + 1, history)
    return history


def check_count(name: str, value) -> int:
    """``value`` if it is an integer >= 1 (not a bool), else a ValueError naming ``name``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r} must be an integer >= 1.")
    return value


@torch.no_grad()
def predict(model: nn.Module, split, batch_size: int = 1024, device=None) -> torch.Tensor:
    """Softmax probabilities, N x C, in eval mode; the model's mode is restored after."""
    return torch.softmax(_logits(model, split, batch_size, device), dim=1)


@torch.no_grad()
def evaluate(model: nn.Module, split, batch_size: int = 1024, loss_fn: LossFn = F.cross_entropy,
             device=None) -> tuple[float, float]:
    """(mean loss, accuracy) on ``split`` in eval mode; the model's mode is restored after."""
    logits = _logits(model, split, batch_size, device)
    y = split.y.to(logits.device)
    return loss_fn(logits, y).item(), (logits.argmax(1) == y).double().mean().item()


def _logits(model: nn.Module, split, batch_size: int, device) -> torch.Tensor:
    """Logits of the whole split, N x C, computed in eval mode."""
    check_count("batch_size", batch_size)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x.to(device)) for x, _ in batches(split, batch_size, shuffle=False, seed=0)])
    finally:
        model.train(was_training)


def confusion_matrix(y_true: torch.Tensor, y_pred: torch.Tensor, n_classes: int) -> torch.Tensor:
    """C x C counts, rows = true class, columns = predicted class."""
    y_true, y_pred = torch.as_tensor(y_true).long().cpu(), torch.as_tensor(y_pred).long().cpu()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {tuple(y_true.shape)} and y_pred {tuple(y_pred.shape)} differ in shape.")
    return torch.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def most_confident_mistakes(probs: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (int64) of up to ``k`` misclassified examples, most confident first. probs: N x C, y: N."""
    if probs.ndim != 2 or len(probs) != len(y):
        raise ValueError(f"probs must be N x C and y N, got {tuple(probs.shape)} and {tuple(y.shape)}.")
    confidence, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).flatten()
    return wrong[torch.argsort(confidence[wrong], descending=True, stable=True)][:k]


def calibration(probs: torch.Tensor, y: torch.Tensor, n_bins: int = 10) -> dict:
    """Per bin b of top probability in ((b-1)/n_bins, b/n_bins] of ``probs`` (N x C) for labels ``y`` (N): lists
    ``confidence``, ``accuracy`` (NaN if empty), ``count``; ``ece`` = sum_b count_b/N |accuracy_b - confidence_b|."""
    if probs.ndim != 2 or len(probs) != len(y) or n_bins < 1:
        raise ValueError(f"need N x C probs, N labels and n_bins >= 1; got {tuple(probs.shape)}, "
                         f"{tuple(y.shape)}, n_bins={n_bins}.")
    confidence, pred = probs.double().max(1)
    correct = (pred == y.to(pred.device)).double()
    bins = (confidence * n_bins).ceil().long().clamp(1, n_bins) - 1
    count = torch.bincount(bins, minlength=n_bins)
    mean_conf = torch.bincount(bins, confidence, minlength=n_bins) / count
    accuracy = torch.bincount(bins, correct, minlength=n_bins) / count
    ece = (count / len(y) * (accuracy - mean_conf).abs()).nansum().item()
    return {"confidence": mean_conf.tolist(), "accuracy": accuracy.tolist(), "count": count.tolist(), "ece": ece}
