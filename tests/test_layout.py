"""The code's shape, checked: the engine's imports (deferred ones included) form no circle and run only down its
floors, no engine module imports the command line or the app, and no function in the engine or the app grows past
the length one reader can hold."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def _modules(package: str) -> dict[str, tuple[Path, bool]]:
    out = {}
    for path in (REPO / package).rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _imported(module: str, is_package: bool, node: ast.AST, known: set[str]) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - node.level + 1]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # "from . import x" names a submodule when one exists, else an attribute of the package
    return {f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names}


def _imports(tree: ast.Module) -> list[ast.AST]:
    """Every import in the module, inside functions too: an import deferred into a function is still a dependency,
    and deferring one is how a circle hides."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _graph() -> dict[str, set[str]]:
    modules = _modules("mess_core")
    graph = {}
    for name, (path, is_package) in modules.items():
        deps: set[str] = set()
        for node in _imports(ast.parse(path.read_text())):
            deps |= _imported(name, is_package, node, set(modules))
        # importing a submodule also runs every package above it
        expanded = set()
        for dep in deps:
            parts = dep.split(".")
            expanded |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
        graph[name] = {d for d in expanded if d != name and not name.startswith(d + ".")}
    return graph


def test_the_engine_imports_form_no_circle():
    graph = _graph()
    known = {d for d in graph}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for dep in sorted(graph[node] & known):
            if state.get(dep) == 1:
                cycle = path[path.index(dep) :] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


# The engine's floors, lowest first: a module imports its own package and the floors below it, never a floor
# above nor a neighbour on its own floor. The bottom floor's modules are the shared base, free to use each other.
FLOORS = (
    ("errors", "fields", "io", "seeding", "checkpoint", "folders", "timelimit"),
    ("models", "data", "conversion"),
    ("evaluate",),
    ("search", "deploy"),
    ("train",),
    ("study",),
    ("cli",),
    ("__main__",),
)
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}


def _floor(module: str) -> tuple[int, str]:
    """The floor of an engine module and the unit it belongs to (its package, or "base" on the bottom floor)."""
    top = module.split(".")[1]
    level = FLOOR[top]
    return level, "base" if level == 0 else top


def test_every_engine_module_sits_on_a_floor():
    graph = _graph()
    lost = sorted(m for m in graph if m != "mess_core" and m.split(".")[1] not in FLOOR)
    assert not lost, f"give these a floor in FLOORS: {lost}"


def test_imports_run_down_the_floors_only():
    """convert, data < evaluate < search, deploy < train < study < cli: evaluation never imports training, the
    search never imports deployment, and nothing imports the command line."""
    upward = []
    for module, deps in sorted(_graph().items()):
        if module == "mess_core":
            continue  # the package facade re-exports the public names of the floors it names
        level, unit = _floor(module)
        for dep in sorted(d for d in deps if d.startswith("mess_core.")):
            dep_level, dep_unit = _floor(dep)
            if dep_unit != unit and dep_level >= level:
                upward.append(f"{module} -> {dep}")
    assert not upward, "these imports run up or sideways: " + ", ".join(upward)


def test_no_engine_module_imports_the_command_line_or_the_app():
    offenders = {
        name: sorted(d for d in deps if d == "mess_core.cli" or d.startswith(("mess_core.cli.", "app")))
        for name, deps in _graph().items()
        if name != "mess_core.__main__" and not name.startswith("mess_core.cli")
    }
    assert not {k: v for k, v in offenders.items() if v}


@pytest.mark.parametrize("package", ["mess_core", "app"])
def test_no_function_or_module_is_longer_than_a_reader_can_hold(package):
    """A function fits on a screen (def to last line, docstring included) and a module holds one concept."""
    long = []
    for path in sorted((REPO / package).rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(REPO)} ({len(text.splitlines())} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(REPO)}::{node.name} ({lines} lines)")
    assert not long, "split these into named steps or modules: " + ", ".join(long)


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_tree_is_lint_clean_and_formatted(command):
    """ruff, as configured in pyproject.toml: the CI runs it through this test."""
    ruff = Path(sys.executable).with_name("ruff")
    done = subprocess.run([str(ruff), *command, "."], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


# The app's layers: app/views holds the figure code, tested without Streamlit; app/screens holds one page each, laid
# out from the views and the app's shared modules (app/figures, app/loaders, app/state, ...), never from another page.
def _app_imports() -> dict[str, set[str]]:
    """Every app module's imports (deferred ones included), by module name."""
    modules = _modules("app")
    graph = {}
    for name, (path, is_package) in modules.items():
        nodes = _imports(ast.parse(path.read_text()))
        graph[name] = set().union(*(_imported(name, is_package, node, set(modules)) for node in nodes))
    return graph


def _is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_app_views_are_free_of_streamlit():
    """A view imports neither Streamlit nor an app module outside app/views (the screens, loaders, state, sidebar
    and boundaries all run Streamlit), so that its tests run without it."""
    offenders = sorted(
        f"{module} -> {dep}"
        for module, deps in _app_imports().items()
        if _is_in(module, "app.views")
        for dep in deps
        if _is_in(dep, "streamlit") or (_is_in(dep, "app") and not _is_in(dep, "app.views"))
    )
    assert not offenders, "app/views must not import these: " + ", ".join(offenders)


def test_no_screen_imports_another_screen():
    """Pages share code through app/figures, app/views, app/loaders and app/state, never through each other."""
    imports = _app_imports()
    screens = {m for m in imports if m.startswith("app.screens.")}
    offenders = sorted(f"{m} -> {d}" for m in screens for d in imports[m] if d in screens and d != m)
    assert not offenders, "move what these share out of the screen they import: " + ", ".join(offenders)


# every command module and every page implements the same small protocol under the same names
PROTOCOL_NAMES = {"add_parser", "run", "page"}


def test_no_two_public_names_collide():
    """A public class or function name means one thing across the engine and the app (the package facades and the
    page registry re-export; they define nothing)."""
    where: dict[str, list[str]] = {}
    for package in ("mess_core", "app"):
        for path in sorted((REPO / package).rglob("*.py")):
            for node in ast.parse(path.read_text()).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                    where.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    collisions = {name: paths for name, paths in where.items() if len(paths) > 1 and name not in PROTOCOL_NAMES}
    assert not collisions, f"rename one of each: {collisions}"
