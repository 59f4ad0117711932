"""Shared helpers for the backpropagation notebook series.

One concept per module: ``config`` (settings, seeding, run records), ``data``
(in-memory data sets and batches), ``models``, ``backprop`` (manual gradients and
gradient checks), ``optim`` (hand-written SGD), ``numpy_mlp``, ``train`` (training,
evaluation, sweeps) and ``plotting``.
"""
