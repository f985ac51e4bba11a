"""The house plan, read from the code: the import graph has no cycle and runs one way.

Every ``import`` and ``from ... import`` of ``firmware_py``, ``training`` and ``converter``
is read with ``ast`` (at module level, inside functions and under ``TYPE_CHECKING`` alike:
a lazy import is still a dependency), and the graph of modules is checked against the
rules below. No third-party tool: the rules are these few lines.

* no cycle between modules;
* ``firmware_py`` (the device) imports neither ``training`` nor ``converter``;
* ``converter`` reads training runs, so it may import ``training``; ``training`` never
  imports ``converter``;
* no module imports another module's private name (``from m import _x``, ``m._x``);
* a component never imports the configuration layer (``firmware_py.config``): the
  configuration composes the components' own settings, never the reverse;
* no module is longer than :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware_py", "training", "converter")
#: Who may import whom, top-level package to top-level package.
ALLOWED = {
    "firmware_py": {"firmware_py"},
    "training": {"training", "firmware_py"},
    "converter": {"converter", "training", "firmware_py"},
}
#: Who may import ``firmware_py.config``: the command line that loads it, the loop and the
#: benchmarks that run listen as a user would, and the config package itself.
CONFIG_USERS = ("firmware_py.config", "firmware_py.cli", "firmware_py.commands", "firmware_py.bench")
MAX_LINES = 450


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


MODULES = project_modules()


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(importer: str, level: int, module: str | None) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    base = base if is_package(importer) else base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports(name: str) -> Iterator[tuple[str, list[str], int]]:
    """``(imported module, names taken from it, line)`` for every import in module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            target = resolve(name, node.level, node.module)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # "from package import module"
                    yield sub, [], node.lineno
                else:
                    yield target, [alias.name], node.lineno


def private_attributes(name: str) -> Iterator[tuple[str, str, int]]:
    """``(module, attribute, line)`` for ``alias._x`` where ``alias`` is an imported project
    module of ``name``."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES:
                    aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            target = resolve(name, node.level, node.module)
            for alias in node.names:
                if f"{target}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{target}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                and not node.attr.startswith("__"):
            dotted = ast.unparse(node.value)
            if dotted in aliases:
                yield aliases[dotted], node.attr, node.lineno


def owner(target: str) -> str | None:
    """The project module an import names (``firmware_py.x.y`` for ``firmware_py.x.y.Thing``)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for name in MODULES:
        for target, _names, _line in imports(name):
            other = owner(target)
            if other is not None and other != name:
                edges[name].add(other)
    return edges


def test_the_rules_see_the_project() -> None:
    assert "firmware_py.cli" in MODULES and "training" in MODULES and "converter" in MODULES
    assert sum(len(v) for v in graph().values()) > 100  # the reader found the imports


def test_no_import_cycles() -> None:
    edges = graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_run_one_way_between_packages() -> None:
    wrong = []
    for name in MODULES:
        top = name.split(".")[0]
        for target, _names, line in imports(name):
            other = target.split(".")[0]
            if other in PACKAGES and other not in ALLOWED[top]:
                wrong.append(f"{MODULES[name].relative_to(REPO)}:{line} imports {target}")
    assert not wrong, "forbidden direction: " + "; ".join(wrong)


def test_no_module_takes_another_modules_private_names() -> None:
    wrong = []
    for name in MODULES:
        for target, names, line in imports(name):
            other = owner(target)
            if other is None or other == name:
                continue
            wrong += [f"{MODULES[name].relative_to(REPO)}:{line} imports {other}.{n}"
                      for n in names if n.startswith("_") and not n.startswith("__")]
        for other, attr, line in private_attributes(name):
            if other != name:
                wrong.append(f"{MODULES[name].relative_to(REPO)}:{line} reads {other}.{attr}")
    assert not wrong, "private names used across modules: " + "; ".join(wrong)


def test_components_never_import_the_configuration() -> None:
    wrong = []
    for name in MODULES:
        if name.startswith(CONFIG_USERS):
            continue
        for target, _names, line in imports(name):
            if owner(target) and owner(target).startswith("firmware_py.config"):
                wrong.append(f"{MODULES[name].relative_to(REPO)}:{line} imports {target}")
    assert not wrong, "components importing the configuration: " + "; ".join(wrong)


def test_modules_stay_small() -> None:
    long = {str(p.relative_to(REPO)): n for p in MODULES.values()
            if (n := p.read_text().count("\n")) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
