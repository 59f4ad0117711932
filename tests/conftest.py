"""Shared fixtures of the unit tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small problems: one thread avoids OpenMP spin-waits on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fail_lines(capsys):
    """A function returning the ``FAIL`` lines that graders printed since its last call."""
    return lambda: [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]


@pytest.fixture
def fails_only_on(fail_lines):
    """``fails_only_on(grader, broken, grade_id, name)``: the grader raises AssertionError for ``grade_id``,
    and every FAIL line names ``name``, both against autograd and against finite differences."""
    def check(grader, broken, grade_id: str, name: str) -> None:
        with pytest.raises(AssertionError, match=grade_id):
            grader(broken)
        fails = fail_lines()
        assert fails and all(line.startswith(f"FAIL  {name}") for line in fails)
        assert any("vs autograd" in line for line in fails) and any("finite differences" in line for line in fails)
    return check
