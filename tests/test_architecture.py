"""The shape of the code: the import stack holds, every module has a floor, nothing imports in a
circle, modules stay short unless they say why, and every router gets its study one way."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
CONTRACTS = {c["id"]: c for c in PYPROJECT["tool"]["importlinter"]["contracts"]}
LONG_LINES = 700  # a module longer than this says why in its docstring ("... on purpose")


def _graph() -> grimp.ImportGraph:
    # With TYPE_CHECKING imports: they run for the type checker, and a circle among them is a
    # circle in the design all the same.
    return grimp.build_graph("app", "workers", exclude_type_checking_imports=False)


def _floors() -> list[set[str]]:
    return [
        {name.strip() for name in re.split(r"[:|]", layer)}
        for layer in CONTRACTS["app-stack"]["layers"]
    ]


def test_the_import_contracts_hold():
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_app_module_has_a_floor():
    floors = set().union(*_floors())
    modules = {m for m in _graph().modules if m.startswith("app.")}
    homeless = sorted(
        m
        for m in modules
        if not any(m == f or m.startswith(f + ".") for f in floors)
        and not any(f.startswith(m + ".") for f in floors)  # a package whose modules have floors
    )
    assert homeless == [], "give these a floor in [tool.importlinter]: " + ", ".join(homeless)


def test_nothing_imports_in_a_circle():
    graph = _graph()
    circles = [
        (a, b)
        for a in graph.modules
        for b in graph.find_modules_directly_imported_by(a)
        if a != b and graph.chain_exists(importer=b, imported=a)
    ]
    assert circles == []


def test_at_most_three_upward_imports_each_with_its_reason():
    ignored = [i for c in CONTRACTS.values() for i in c.get("ignore_imports", [])]
    assert len(ignored) <= 3
    text = (ROOT / "pyproject.toml").read_text()
    for line in ignored:
        before = text[: text.index(f'"{line}"')].rstrip().splitlines()[-1]
        assert before.strip().startswith("#"), f"say why {line} goes upward"


def test_long_modules_say_why():
    long = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        source = path.read_text()
        if source.count("\n") > LONG_LINES:
            doc = ast.get_docstring(ast.parse(source)) or ""
            if "on purpose" not in doc:
                long.append(str(path.relative_to(ROOT)))
    assert long == []


def test_routers_get_their_study_from_the_one_dependency():
    """Only app/deps.py (routers), the CLI and the studies service look a study up by slug."""
    allowed = {"app/deps.py", "app/cli.py", "app/studies/service.py"}
    lookups = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "app").rglob("*.py")
        if "get_by_slug(" in path.read_text() and str(path.relative_to(ROOT)) not in allowed
    )
    assert lookups == []
    routers = [*ROOT.glob("app/*/router.py"), ROOT / "app/rating/admin.py"]
    for path in routers:
        source = path.read_text()
        if "{slug}" in source:
            assert "StudyDep" in source or "StudyForUpdateDep" in source, path


def test_the_readme_layout_names_every_package_and_module_of_app():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    layout = layout[: layout.index("\n## ", 1)]
    names = [
        p.name + ("/" if p.is_dir() else "")
        for p in sorted((ROOT / "app").iterdir())
        if not p.name.startswith("__") and (p.is_dir() or p.suffix == ".py")
    ]
    missing = [n for n in names if n not in layout]
    assert missing == []
    rating = [p.stem for p in (ROOT / "app/rating").glob("*.py") if not p.stem.startswith("__")]
    assert [m for m in rating if m not in layout] == []
