"""environment.yml and pyproject.toml name the same dependencies."""

import re
import tomllib

from helpers.config import REPO_ROOT

CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def pyproject_deps() -> set[str]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    return {_name(r) for r in reqs}


def conda_deps() -> set[str]:
    names, section = set(), None
    for line in (REPO_ROOT / "environment.yml").read_text().splitlines():
        if re.match(r"^[a-z]", line):
            section = line.split(":")[0]
        m = re.match(r"^  - ([A-Za-z0-9_.-]+)", line)  # conda entries, not the pip: list
        if section == "dependencies" and m and m.group(1) not in ("python", "pip"):
            names.add(CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower()))
    return names


def test_environment_yml_matches_pyproject():
    assert conda_deps() == pyproject_deps()


def test_dependencies_are_ranges_not_pins():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    for req in project["dependencies"]:
        assert "==" not in req, f"{req} is an exact pin; use a range"


def _floor(package: str) -> tuple[int, ...]:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    req = next(r for r in project["dependencies"] if _name(r) == package)
    return tuple(int(p) for p in re.search(r">=([0-9.]+)", req).group(1).split("."))


def _installed(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.match(r"[0-9]+(\.[0-9]+)*", version).group(0).split("."))


def test_installed_torch_is_within_the_safe_range():
    """torch.load(weights_only=True) ran code up to torch 2.5.1 (CVE-2025-32434): the floor is 2.6."""
    import torch
    import torchvision

    assert _floor("torch") >= (2, 6) and _floor("torchvision") >= (0, 21)
    assert (2, 6) <= _installed(torch.__version__) < (3,), torch.__version__
    assert _installed(torchvision.__version__) >= _floor("torchvision"), torchvision.__version__
