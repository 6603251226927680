"""The library's import graph: no cycles, and no module importing a higher layer (read from the
source with `ast`, lazy imports inside functions included)."""

import ast
import os

import pytest

from tests.conftest import REPO

LIBRARY = os.path.join(REPO, "lmjax")
# Lowest first. A module may import its own layer or lower ones, never a higher one.
LAYERS = (
    ("lmjax.sharding",),  # mesh axes and sizes: the model and the train step both read them
    ("lmjax", "lmjax.errors", "lmjax.flops", "lmjax.config_defaults", "lmjax.config_checks",
     "lmjax.config_files", "lmjax.host_malloc", "lmjax.sampling", "lmjax.models", "lmjax.data"),
    ("lmjax.workdir",),  # the run directory's layout
    ("lmjax.tasks",),  # objectives: data, model, loss, metrics
    ("lmjax.train",),  # state, steps, loop, checkpoints, inference
    ("lmjax.convert", "lmjax.results", "lmjax.plots"),  # built on trained workdirs
    ("lmjax.evals",),  # zero-shot evaluations of trained workdirs
    ("lmjax.sweep",),  # runs many trainings, collates them
    ("lmjax.cli",),  # the entry points' flag parsing and one-line errors
)  # fmt: skip


def module_name(path):
    rel = os.path.relpath(path, REPO)[: -len(".py")].split(os.sep)
    return ".".join(rel[:-1] if rel[-1] == "__init__" else rel)


def is_module(name):
    base = os.path.join(REPO, *name.split("."))
    return os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__init__.py"))


def imports_of(path):
    """The modules (of any package) that the file at `path` imports, `from a import b` giving
    `a.b` where b is a module and `a` otherwise."""
    tree = ast.parse(open(path).read())
    package = module_name(path)
    if not path.endswith("__init__.py"):
        package = package.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if is_module(full) else base)
    return out


def library_graph():
    graph = {}
    for directory, _, files in os.walk(LIBRARY):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(directory, f)
                graph[module_name(path)] = imports_of(path)
    return graph


def layer(name):
    best = max((p for ps in LAYERS for p in ps if name == p or name.startswith(p + ".")), key=len)
    return next(i for i, ps in enumerate(LAYERS) if best in ps)


def find_cycle(graph):
    """A list of modules that import each other in a circle, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in graph:
                continue
            if state.get(dep) == "open":
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_find_cycle_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_library_has_no_import_cycle():
    graph = library_graph()
    assert len(graph) > 20 and "lmjax.workdir" in graph and "lmjax.train.loop" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_imports_a_higher_layer_or_the_scripts():
    upward = []
    for module, deps in library_graph().items():
        for dep in deps:
            top = dep.split(".")[0]
            if top in ("experiments", "configs", "tests"):
                upward.append(f"{module} imports {dep} (outside the library)")
            elif dep.startswith("jax._src"):
                upward.append(f"{module} imports {dep} (JAX's private API)")
            elif top == "lmjax" and layer(dep) > layer(module):
                upward.append(f"{module} (layer {layer(module)}) imports {dep} ({layer(dep)})")
    assert not upward, "\n".join(sorted(upward))


@pytest.mark.parametrize(
    "module,dep", [("lmjax.tasks.clm", "lmjax.train.loop"), ("lmjax.workdir", "lmjax.tasks")]
)
def test_layers_rank_an_upward_import_higher(module, dep):
    assert layer(dep) > layer(module)


def test_scripts_import_no_private_jax():
    scripts = os.path.join(REPO, "experiments")
    for f in os.listdir(scripts):
        if f.endswith(".py"):
            private = [m for m in imports_of(os.path.join(scripts, f)) if m.startswith("jax._src")]
            assert not private, f"experiments/{f} imports {private}"


def test_the_library_reads_nothing_outside_the_repository():
    """The peers and data beside the checkout are for benchmarks/ and configs/, not lmjax/."""
    found = []
    for root, _, files in os.walk(os.path.join(REPO, "lmjax")):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(root, f)) as src:
                    text = src.read()
                    if "../shared" in text or "shared/peers" in text:
                        found.append(os.path.relpath(os.path.join(root, f), REPO))
    assert not found, found
