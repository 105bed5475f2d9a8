"""The import graph of lynx: no cycles, and no stage importing a stage above it.

Every ``import`` counts, including the ones deferred inside functions (they run up the layers
just the same). The package root (``lynx/__init__``, the lazy public facade) is left out; a
submodule importing its own package's ``__init__`` is inherent to Python and left out too.
"""

import ast
from pathlib import Path

import lynx

ROOT = Path(lynx.__file__).resolve().parent  # the package as imported: the checkout, or the installed wheel (.ci/check_wheel)

#: lowest layer first; a module may import only modules of its own layer or below
LAYERS = [
    (
        "foundation",
        [
            "lynx.errors",
            "lynx.prompting",
            "lynx.grading",
            "lynx.layers",
            "lynx.models",
            "lynx.thinking",
            "lynx.cues",
            "lynx.config",
            "lynx.datasets",
            "lynx.store",
            "lynx.probe.artifact",
            "lynx.probe.metrics",
            "lynx.probe.trees",
            "lynx.probe.context",
            "lynx.probe.scoring",
            "lynx.calibrate.policy",
            "lynx.calibrate.procedures",
            "lynx.calibrate.store",
            "lynx.calibrate.conditions",
            "lynx.evaluate.table",
            "lynx.organism.problems",
            "lynx.organism.tokenizer",
            "lynx.organism.traces",
            "lynx.organism.examples",
            "lynx.families",
            "lynx.smollm2.problems",
            "lynx.smollm2.traces",
            "lynx.smollm2.convert",
            "lynx.smollm2.reasoner",
            "lynx.monitor.metrics",
            "lynx.monitor.sequences",
        ],
    ),
    ("policy", ["lynx.exit_policy"]),
    ("engines", ["lynx.engines"]),
    ("collect", ["lynx.rollouts", "lynx.collect"]),
    ("train", ["lynx.probe"]),
    ("calibrate", ["lynx.calibrate"]),
    ("monitor", ["lynx.monitor"]),
    ("run", ["lynx.run"]),
    ("evaluate", ["lynx.evaluate"]),
    ("organism tooling", ["lynx.organism"]),
    ("smollm2 tooling", ["lynx.smollm2"]),
    ("conformance models", ["lynx.conformance"]),
    ("demo", ["lynx.demo"]),
    ("cli", ["lynx.cli"]),
]


def _modules() -> dict[str, Path]:
    mods = {}
    for p in ROOT.rglob("*.py"):
        parts = p.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = p
    return mods


def _resolve(name: str, mods: dict) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lynx":
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "lynx"]
            for t in targets:
                r = _resolve(t, mods)
                if r is not None and r != "lynx" and r != name and not name.startswith(r + "."):
                    out.add(r)
        graph[name] = out
    return graph


def layer_of(module: str) -> int:
    """The most specific prefix listed in LAYERS decides."""
    best = (-1, None)
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best[0]:
                best = (len(p), rank)
    assert best[1] is not None, f"{module} is in no layer of tests/test_layering.py: place it"
    return best[1]


def test_no_module_imports_a_layer_above_its_own():
    graph = import_graph()
    bad = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {t} ({LAYERS[layer_of(t)][0]})" for m, targets in graph.items() if m != "lynx" for t in targets if layer_of(t) > layer_of(m)]
    assert not bad, "\n".join(bad)


def test_the_import_graph_has_no_cycles():
    graph = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t) :] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_deferred_imports():
    """The check itself can fail: a deferred import inside a function is an edge."""
    graph = import_graph()
    assert "lynx.engines.vllm_engine" in graph["lynx.run"]  # imported inside generate(), not at the top
    assert layer_of("lynx.engines.exit_control") > layer_of("lynx.exit_policy") > layer_of("lynx.calibrate.store")


def test_no_module_level_mutable_registries_in_the_engines():
    """Engine state belongs to an engine (its controller, its worker state), never to a module:
    no module-level list, dict or set that code could mutate at run time."""
    offenders = []
    for path in (ROOT / "engines").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            value = node.value if isinstance(node, (ast.Assign, ast.AnnAssign)) else None
            if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)) or (
                isinstance(value, ast.Call) and getattr(value.func, "id", None) in ("list", "dict", "set", "defaultdict", "OrderedDict")
            ):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
            if isinstance(node, ast.Global) or any(isinstance(n, ast.Global) for n in ast.walk(node)):
                offenders.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} (global statement)")
    assert not offenders, offenders
