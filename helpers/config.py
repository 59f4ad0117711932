"""Settings for the whole series, read once from the ``HELPERS_*`` environment variables (the README's
settings table gives their meaning and defaults). Quick mode changes sizes, never the code path."""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_SOURCES = ("auto", "real", "offline")
MNIST_DATASETS = ("mnist", "fashion_mnist")
PROGRESS_CHOICES = ("auto", "1", "0")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}
# nbgrader sets NBGRADER_EXECUTION (autograde, validate) in the kernels it runs, `make grade`'s included.
GRADING_VARIABLE = "NBGRADER_EXECUTION"


class SettingsError(ValueError):
    """A ``HELPERS_*`` environment variable holds a value we cannot use."""


@dataclass(frozen=True)
class Settings:
    """The series' settings, one field per ``HELPERS_*`` variable (e.g. ``quick``: ``HELPERS_QUICK``)."""

    quick: bool
    data_dir: Path
    figures_dir: Path
    device: torch.device
    seed: int
    data_source: str
    mnist_dataset: str = "mnist"
    progress: bool | None = None  # None: auto
    results_dir: Path | None = None  # sweep results, checkpoints, saved weights (None: the default below)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in _TRUE | _FALSE:
        raise SettingsError(f"{name}={raw!r} is not a boolean; use 1 or 0.")
    return value in _TRUE


def _parse_seed(raw: str) -> int:
    try:
        seed = int(raw.strip())
    except ValueError:
        raise SettingsError(f"HELPERS_SEED={raw!r} is not an integer; use e.g. HELPERS_SEED=0.") from None
    if not 0 <= seed < 2**32:
        raise SettingsError(f"HELPERS_SEED={seed} is out of range; use 0 <= seed < 2**32.")
    return seed


def _choice(env, name: str, choices: tuple[str, ...]) -> str:
    """``env[name]`` lower-cased (default: the first choice); SettingsError listing the valid ones."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise SettingsError(f"{name}={value!r} is unknown; valid choices: {', '.join(choices)}.")
    return value


def parse_device(raw: str | None) -> torch.device:
    """``None``/empty -> cuda if available else cpu; otherwise validate the name."""
    if raw is None or not raw.strip():
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = raw.strip().lower()
    valid = "valid choices: cpu, cuda, cuda:N, mps (or leave HELPERS_DEVICE unset)"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SettingsError(f"HELPERS_DEVICE={raw!r} is not a device; {valid}.") from None
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if device.type not in available:
        raise SettingsError(f"HELPERS_DEVICE={raw!r} is not supported; {valid}.")
    if not available[device.type]:
        raise SettingsError(f"HELPERS_DEVICE={raw!r} but {device.type.upper()} is not available on this machine; "
                            f"use HELPERS_DEVICE=cpu. {valid}.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise SettingsError(f"HELPERS_DEVICE={raw!r} but only {torch.cuda.device_count()} CUDA device(s) exist; "
                            f"{valid} with N < {torch.cuda.device_count()}.")
    return device


def _path(env, name: str, default: Path) -> Path:
    raw = env.get(name, "").strip()
    return Path(raw).expanduser().resolve() if raw else default


def grading(environ=None) -> bool:
    """Whether this process runs under nbgrader's autograde or validate (``NBGRADER_EXECUTION``), as in
    ``make grade``."""
    env = os.environ if environ is None else environ
    return env.get(GRADING_VARIABLE, "").strip().lower() not in _FALSE


def read_settings(environ: dict[str, str] | None = None) -> Settings:
    """Parse settings from ``environ`` (default ``os.environ``); raises ``SettingsError``.

    Under a grader (:func:`grading`) the defaults change, so that grading is quick, silent on stderr and
    isolated: ``HELPERS_QUICK=1``, ``HELPERS_PROGRESS=0``, and results and figures in a fresh temporary
    folder. A non-empty variable still wins."""
    env = os.environ if environ is None else environ
    graded = grading(env)
    quick = _parse_bool("HELPERS_QUICK", env.get("HELPERS_QUICK", "").strip() or ("1" if graded else "0"))
    scratch = Path(tempfile.mkdtemp(prefix="helpers-grading-")) if graded else None
    default_figures = scratch / "figures" if graded else REPO_ROOT / ("build/quick-figures" if quick else "figures")
    default_results = scratch / "results" if graded else REPO_ROOT / ("build/quick-results" if quick else "results")
    progress = "0" if graded and not env.get("HELPERS_PROGRESS", "").strip() else \
        _choice(env, "HELPERS_PROGRESS", PROGRESS_CHOICES)
    return Settings(quick=quick, data_dir=_path(env, "HELPERS_DATA_DIR", REPO_ROOT / "data"),
                    figures_dir=_path(env, "HELPERS_FIGURES_DIR", default_figures),
                    results_dir=_path(env, "HELPERS_RESULTS_DIR", default_results),
                    device=parse_device(env.get("HELPERS_DEVICE")), seed=_parse_seed(env.get("HELPERS_SEED", "0")),
                    data_source=_choice(env, "HELPERS_DATA_SOURCE", DATA_SOURCES),
                    mnist_dataset=_choice(env, "HELPERS_MNIST_DATASET", MNIST_DATASETS),
                    progress=None if progress == "auto" else progress == "1")


def show_progress(progress: bool | None = None) -> bool:
    """Whether a training loop shows its tqdm bar: an explicit ``progress`` wins, then ``HELPERS_PROGRESS``;
    ``auto`` shows bars in a terminal or a Jupyter kernel and hides them in logs."""
    if progress is not None:
        return bool(progress)
    configured = settings().progress
    if configured is not None:
        return configured
    return sys.stderr.isatty() or "ipykernel" in sys.modules


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The settings of this process, read from the environment once and cached."""
    return read_settings()


def seed_everything(seed: int | None = None) -> int:
    """Seed Python, NumPy and torch (CPU and CUDA); returns the seed used."""
    seed = settings().seed if seed is None else int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return seed


def run_header(s: Settings | None = None) -> str:
    """One line for the first cell of every notebook: mode, device, seed, data, versions."""
    s = settings() if s is None else s
    return (f"mode={s.mode} | device={s.device} | seed={s.seed} | data={s.data_source} | "
            f"torch {torch.__version__} | numpy {np.__version__}")


def versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    import matplotlib

    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "matplotlib": matplotlib.__version__}


def write_run_record(name: str, record: dict, s: Settings | None = None) -> Path:
    """Write ``<figures_dir>/<name>.json``: ``record`` (naming its data source, e.g. ``{"data": split.source}``)
    plus settings and versions; no timestamps, so reruns with the same results give the same file."""
    s = settings() if s is None else s
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"run record name {name!r} must be a plain file stem like '01_matrix_chain'.")
    # float32 sums depend on how work is split across threads: a rerun matches bit for bit only with the same count.
    full = {"settings": {"mode": s.mode, "device": str(s.device), "seed": s.seed, "data_source_setting": s.data_source,
                         "torch_threads": torch.get_num_threads()},
            "versions": versions(), **record}
    s.figures_dir.mkdir(parents=True, exist_ok=True)
    path = s.figures_dir / f"{name}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path
