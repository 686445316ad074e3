"""The public API is what the package docstrings list, and the reference service uses nothing else."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = ("jobpulse", "jobpulse.web", "jobpulse.worker")
# The contract: names an outside test suite imports.
CONTRACT = {
    "jobpulse": {"TaskRegistry", "progress", "progress_reporter", "TaskFailed", "JobAborted"},
    "jobpulse.web": {"jobs_router", "create_app", "JobsDep"},
    "jobpulse.worker": {"worker_settings"},
}


def public(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_exists_and_the_contract_is_there(module: str) -> None:
    imported = importlib.import_module(module)
    assert all(hasattr(imported, name) for name in imported.__all__)
    assert CONTRACT[module] <= public(module)


def _jobpulse_imports(path: Path) -> list[tuple[str, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jobpulse":
            found += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names if alias.name.split(".")[0] == "jobpulse"]
    return found


def test_the_reference_service_is_built_on_the_public_api_only() -> None:
    files = sorted([*(ROOT / "web").rglob("*.py"), *(ROOT / "worker").rglob("*.py")])
    assert files
    private = [
        f"{path.relative_to(ROOT)}: {module} {name}".strip()
        for path in files
        for module, name in _jobpulse_imports(path)
        if module not in PUBLIC_MODULES or name not in public(module)
    ]
    assert private == [], "the reference service reaches past the public API; give the API what it needs"
