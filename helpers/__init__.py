"""Shared helpers of the backpropagation notebook series (the notebooks hold the taught code), one concept per
module: ``config``, ``data`` (file formats in ``datafiles``, offline stand-ins in ``standins``), ``augment``,
``models``, ``train``, ``sweep``, ``checkpoint``, ``plotting``, ``backprop`` (the graders), ``notebook``."""
