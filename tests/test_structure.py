"""The package's shape: no import cycle, one source per closed choice, a torch-free validate."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

import promptaudit
from promptaudit import choices
from promptaudit.errors import InputError

PACKAGE = Path(promptaudit.__file__).resolve().parent
SRC = PACKAGE.parent


# ------------------------------------------------------------------ imports
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _runtime_imports(tree: ast.Module):
    """Every import statement that can run: module level and inside functions alike.

    Only ``if TYPE_CHECKING:`` blocks are left out. A function-level import cycle
    still ties two modules together (each needs the other to do its work), so it
    counts.
    """
    for_type_checkers: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for_type_checkers.update(id(inner) for part in node.body for inner in ast.walk(part))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in for_type_checkers:
            yield node


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (outside ``if TYPE_CHECKING:``)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")
                    if not is_package:
                        anchor = anchor[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # ``from pkg import sub`` imports the submodule; ``from mod import name`` the module
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            # a module's own packages are imported before it anyway: not an edge of a cycle
            ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
            edges.update(t for t in targets if t in modules and t != name and t not in ancestors)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for child in sorted(graph.get(node, ())):
            if state.get(child) == 1:
                return stack[stack.index(child):] + [child]
            if child not in state and (cycle := visit(child)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_sees_the_package():
    graph = import_graph()
    assert {"promptaudit.pipeline", "promptaudit.spec"} <= graph["promptaudit.runner"]
    assert "promptaudit.prompted" in graph["promptaudit.attribution"]
    assert "promptaudit.choices" in graph["promptaudit.spec"]


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


# ------------------------------------------------------------------ choices
def test_each_stage_re_exports_its_choices_from_one_place():
    from promptaudit import fairness, models, projection, spec, training

    assert models.Task is choices.Task and models.DType is choices.DType
    assert training.InitMethod is choices.InitMethod
    assert training.default_init_text is choices.default_init_text
    assert projection.Metric is choices.ProjectionMetric
    assert spec.Metric is choices.ProjectionMetric
    assert fairness.GROUP_METRICS is choices.GROUP_METRICS
    assert fairness.LABEL_METRICS is choices.LABEL_METRICS
    assert spec.FAIRNESS_METRICS is choices.GROUP_METRICS


def test_the_spec_allows_exactly_the_stages_choices():
    from promptaudit import spec

    def allowed(model, field):
        return typing.get_args(model.model_fields[field].annotation)

    assert allowed(spec.AttributionSpec, "method") == tuple(choices.AttributionMethod)
    assert allowed(spec.AttributionSpec, "baseline") == tuple(choices.Baseline)
    assert allowed(spec.TrainSpec, "init") == tuple(choices.InitMethod)


def test_attribution_methods_and_baselines_are_the_choices_module_s():
    from promptaudit import attribution

    assert attribution.AttributionMethod is choices.AttributionMethod
    assert attribution.Baseline is choices.Baseline
    with pytest.raises(InputError) as error:
        attribution.AttributionMethod.parse("lime")
    assert str(error.value) == ("method: unknown attribution method 'lime'; allowed: "
                                "integrated_gradients, feature_ablation, shapley_sampling")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("num_virtual_tokens", 0, "num_virtual_tokens: 0; must be >= 1"),
    ("num_virtual_tokens", 513, "num_virtual_tokens: 513; must be <= 512"),
    ("epochs", 1001, "epochs: 1001; must be <= 1000"),
    ("max_length", 3, "max_length: 3; must be >= 4"),
])
def test_training_bounds_are_the_same_in_the_spec_and_the_trainer(field, value, message):
    from promptaudit.errors import InputError, SpecError
    from promptaudit.spec import parse_spec
    from promptaudit.training import TrainingConfig

    with pytest.raises(InputError, match=f"^{message}$"):
        TrainingConfig(init_text="x", **{field: value}).check()
    raw = {"name": "a", "data": {"path": "d.csv"},
           "prompt": {"train": {"data": {"path": "t.csv"}, field: value}}}
    with pytest.raises(SpecError, match=f"prompt.train.{field}"):
        parse_spec(raw)
    lowest, highest = choices.TRAINING_BOUNDS[field]
    inside = max(lowest, min(value, highest or value))
    TrainingConfig(init_text="x", **{field: inside}).check()
    parse_spec({**raw, "prompt": {"train": {"data": {"path": "t.csv"}, field: inside}}})


def test_default_init_text():
    assert choices.default_init_text(["reject", "accept"]) == (
        "Classify this text as reject or accept")


# ----------------------------------------------------------------- validate
_VALIDATE = """
import json, sys
sys.argv = ["promptaudit", "validate", sys.argv[1]]
from promptaudit.cli import main
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
heavy = ("torch", "transformers", "fairlearn", "accelerate", "peft", "captum")
print(json.dumps({"code": code, "loaded": [m for m in heavy if m in sys.modules]}))
"""


def test_validate_does_not_import_torch(tmp_path):
    audit = tmp_path / "audit.yaml"
    # validate reads the data files' headers (preflight), so they must exist.
    (tmp_path / "t.csv").write_text("text,label\nfine,a\nbad,b\n", encoding="utf-8")
    (tmp_path / "d.csv").write_text("text,g\nfine,x\nbad,y\n", encoding="utf-8")
    audit.write_text(json.dumps({
        "name": "light", "model": {"dtype": "bfloat16", "task": "sequence-classification"},
        "prompt": {"train": {"data": {"path": "t.csv", "label_column": "label"},
                             "init": "vocab"}},
        "data": {"path": "d.csv", "sensitive_features": ["g"]},
        "projection": {"metric": "l2"},
        "attribution": {"method": "shapley_sampling", "baseline": "mean"},
        "fairness": {"metrics": ["selection_rate", "mean_score"]},
    }), encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", _VALIDATE, str(audit)], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"code": 0, "loaded": []}
    assert "valid audit spec 'light'" in done.stdout


def test_the_result_types_and_schema_load_without_torch():
    """The typed result sections, their schema and ``gate``'s reader import no heavy stack."""
    code = (
        "import json, sys\n"
        "from promptaudit.results import result_schema, read_result_json\n"
        "import promptaudit.result_types\n"
        "result_schema()\n"
        "heavy = ('torch', 'transformers', 'fairlearn', 'peft', 'captum')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
