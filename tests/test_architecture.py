"""The package map of ARCHITECTURE.md: imports point one way (datasets -> trainables -> search -> dashboards) and
no module but the synthetic generator outgrows one screenful of concepts."""
import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

ORDER = ("datasets", "trainables", "search", "dashboards")  # each may import only those before it
MAX_LINES = 350
LONG_ALLOWED = {"datasets/synthetic.py"}  # the generator: one concept, drawn in detail


def modules(package: str):
    return sorted((REPO_ROOT / package).rglob("*.py"))


def imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(ORDER)


@pytest.mark.parametrize("package", ORDER)
def test_imports_point_one_way(package):
    allowed = set(ORDER[: ORDER.index(package) + 1])
    wrong = {str(p.relative_to(REPO_ROOT)): sorted(imported_packages(p) - allowed) for p in modules(package)}
    assert not {k: v for k, v in wrong.items() if v}, f"{package}/ may import only {sorted(allowed)}"


def test_modules_stay_small():
    long = {str(p.relative_to(REPO_ROOT)): n for package in ORDER for p in modules(package)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= LONG_ALLOWED, f"modules over {MAX_LINES} lines: {long}"
