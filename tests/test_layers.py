"""The package keeps its layers: no import cycle, no upward import, no oversized module or class.

Every import counts, at module level, inside functions and under ``TYPE_CHECKING``: a cycle in
the types is a cycle in the design. The map below is the one in the README's layout section.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lute_async"
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 300

# Layer of each module or package (a dotted name under lute_async; the longest prefix wins).
# A package's own entry is the layer of its __init__, which re-exports its children.
LAYERS: dict[str, int] = {
    # L0 vocabulary, and the task side
    "errors": 0, "wire": 0, "messages": 0, "status": 0, "templates": 0, "limits": 0,
    "verdicts": 0, "redaction": 0, "logs": 0, "plain_msgpack": 0, "error_budget": 0,
    "private_paths": 0, "targets": 0, "hostname": 0,
    "task": 0, "worker": 0, "forkserver_main": 0, "guardian_main": 0,
    # L1 contracts
    "launchers.base": 1, "communicators.base": 1, "communicators.bounds": 1,
    "communicators.lines": 1, "communicators.stream": 1, "communicators.typed": 1,
    "hooks.events": 1, "records.model": 1,
    "options": 1, "sandbox": 1,
    "retry": 1, "tasklets": 1,
    # L2 domain
    "run.lifecycle": 2, "records.keeper": 2,
    # L3 adapters
    "communicators": 3, "launchers": 3, "records": 3, "channel": 3, "hooks": 3,
    "launchers.slurm.requeue": 3, "launchers.slurm.attach": 3, "communicators.spool": 3,
    "communicators.shared_socket": 3, "communicators.shared_listener": 3,
    "task.spool": 0, "run.attach": 4, "cli.attach": 6,
    # L4 run engine
    "run": 4,
    # L5 orchestration
    "executor": 5, "workflow": 5, "config": 5, "background": 5, "futures": 5,
    # L6 application
    "cli": 6, "demo": 6, "display": 6, "app": 6, "web": 6, "psij": 6,
}
FACE = "lute_async"  # the public face re-exports every layer


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The lute_async modules `name` imports (deepest known name of each import)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            targets += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    out = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def _dependencies(name: str) -> set[str]:
    """Imports that are dependencies: a package's face re-exporting its own children is not
    one, nor is a child importing its own package's face."""
    deps = _imports(name, MODULES[name])
    if MODULES[name].name == "__init__.py":
        deps = {d for d in deps if not d.startswith(name + ".")}
    return {d for d in deps if not name.startswith(d + ".")}


def layer_of(name: str) -> int | None:
    relative = name.removeprefix(FACE + ".")
    while relative:
        if relative in LAYERS:
            return LAYERS[relative]
        relative = relative.rpartition(".")[0]
    return None


def test_every_module_has_a_layer() -> None:
    missing = [name for name in MODULES if name != FACE and layer_of(name) is None]
    assert missing == [], f"give these modules a layer in LAYERS: {missing}"


def test_no_import_cycle() -> None:
    sorter = graphlib.TopologicalSorter({name: _dependencies(name) for name in MODULES})
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        pytest.fail("import cycle: " + " -> ".join(error.args[1]))


def test_no_module_imports_from_a_higher_layer() -> None:
    upward = []
    for name in MODULES:
        own = layer_of(name)
        if name == FACE or own is None:
            continue
        for dep in sorted(_dependencies(name)):
            theirs = layer_of(dep)
            if dep != FACE and theirs is not None and theirs > own:
                upward.append(f"{name} (L{own}) imports {dep} (L{theirs})")
            elif dep == FACE:
                upward.append(f"{name} imports the package face {FACE}")
    assert upward == []


def test_no_oversized_module_or_class() -> None:
    oversized = []
    for name, path in MODULES.items():
        text = path.read_text()
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            oversized.append(f"module {name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            size = (node.end_lineno or 0) - node.lineno + 1 if isinstance(node, ast.ClassDef) else 0
            if size > MAX_CLASS_LINES:
                oversized.append(f"class {name}.{getattr(node, 'name', '?')}: {size} lines")
    assert oversized == []


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    """The checker itself: the real graph has edges, and a planted cycle is found."""
    assert "lute_async.errors" in _dependencies("lute_async.limits")
    graph = {name: _dependencies(name) for name in MODULES}
    graph["lute_async.errors"] = graph["lute_async.errors"] | {"lute_async.limits"}
    with pytest.raises(graphlib.CycleError):
        graphlib.TopologicalSorter(graph).prepare()
    assert layer_of("lute_async.records.model") == 1
    assert layer_of("lute_async.records.store") == 3


def test_the_readme_layout_names_every_module() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    layout = readme.split("## Layout\n", 1)[1].split("```", 2)[1]
    stems = {path.stem for path in PACKAGE.rglob("*.py")} - {"__init__", "__main__"}
    assert sorted(stem for stem in stems if stem not in layout) == []
