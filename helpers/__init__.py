"""Shared helpers of the backpropagation notebook series (the notebooks hold the taught code).

One concept per module: ``config`` (settings, seeding, run records), ``data`` (in-memory data sets,
splits, batches, the MNIST mirror; file formats in ``datafiles``, offline stand-ins in ``standins``),
``augment`` (per-image random shifts and rotations), ``models``, ``train`` (the training loop,
evaluation), ``sweep`` (many trainings in parallel, resumable), ``checkpoint``, ``plotting``,
``backprop`` (gradient checks and the graders of the exercises) and ``notebook`` (defs-only import).
"""
