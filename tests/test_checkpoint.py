"""helpers.checkpoint: atomic save, safe load, clear errors."""

import pickle

import pytest
import torch
from torch import nn

from helpers.checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_round_trip_gives_identical_weights(tmp_path):
    a, b = _net(0), _net(1)
    path = save_checkpoint(a, tmp_path / "sub" / "model.pt")
    load_checkpoint(b, path)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp files left


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # would create the marker file when unpickled


def test_tampered_file_does_not_execute_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Exploit(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="could not be loaded safely"):
        load_checkpoint(_net(), path)
    assert not marker.exists()


def test_truncated_missing_and_mismatched_files(tmp_path):
    path = save_checkpoint(_net(), tmp_path / "m.pt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="m.pt"):
        load_checkpoint(_net(), path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(_net(), tmp_path / "nope.pt")
    save_checkpoint(nn.Linear(5, 5), tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not fit Sequential"):
        load_checkpoint(_net(), tmp_path / "other.pt")


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    good = _net(0)
    path = save_checkpoint(good, tmp_path / "m.pt")
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint([1, 2, 3], path)  # type: ignore[arg-type]
    assert path.read_bytes() == before


def test_atomic_write_interrupted_mid_write_keeps_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "f.bin", lambda f: f.write(b"old"))

    def crash(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]
