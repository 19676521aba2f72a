"""The package's shape: no import cycle, one source per closed choice, a torch-free validate."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from pydantic_core import PydanticUndefined

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
    assert "promptaudit.prompted_model" in graph["promptaudit.attribution"]
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
    assert spec.GROUP_METRICS is choices.GROUP_METRICS


def test_the_spec_allows_exactly_the_stages_choices():
    from promptaudit import spec

    def allowed(model, field):
        return typing.get_args(model.model_fields[field].annotation)

    assert allowed(spec.AttributionSpec, "method") == tuple(choices.AttributionMethod)
    assert allowed(spec.AttributionSpec, "baseline") == tuple(choices.Baseline)
    assert spec.TrainSpec.model_fields["init"].annotation is choices.InitMethod


def test_attribution_methods_and_baselines_are_the_choices_module_s():
    from promptaudit import attribution

    assert attribution.AttributionMethod is choices.AttributionMethod
    assert attribution.Baseline is choices.Baseline
    with pytest.raises(InputError) as error:
        attribution.AttributionMethod.parse("lime")
    assert str(error.value) == ("method: unknown attribution method 'lime'; allowed: "
                                "integrated_gradients, feature_ablation, shapley_sampling")


# ---------------------------------------------------------------- settings
#: The stages' settings models, each with the spec section that embeds it.
_FAMILIES = {"training": ("PromptTuning", "TrainingConfig", "TrainSpec"),
             "mitigation": ("MitigationSweep", "MitigationSettings", "MitigationSpec")}
#: Settings that several stages share: declared once, as an annotated type.
_SHARED = {"max_length": "MaxLength", "seed": "Seed"}


def _class_fields(module) -> dict[str, list[str]]:
    """Class name -> the fields its own body declares (``name: type`` lines)."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    return {node.name: [stmt.target.id for stmt in node.body
                        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)]
            for node in tree.body if isinstance(node, ast.ClassDef)}


def test_each_setting_is_declared_once_for_the_spec_and_the_library():
    from promptaudit import settings, spec

    assert issubclass(spec.TrainSpec, settings.PromptTuning)
    assert issubclass(settings.TrainingConfig, settings.PromptTuning)
    assert issubclass(spec.MitigationSpec, settings.MitigationSweep)
    assert issubclass(settings.MitigationSettings, settings.MitigationSweep)
    declared = {**_class_fields(settings), **_class_fields(spec)}
    for family, classes in _FAMILIES.items():
        names = [name for cls in classes for name in declared[cls]]
        twice = {name for name in names if names.count(name) > 1}
        # the spec's suite is "counterfactuals.suite, else the settings' default": a
        # default of its own, not the same one written again
        assert twice <= {"suite"}, (family, twice)
    assert spec.MitigationSpec.model_fields["suite"].default is None
    assert settings.MitigationSettings.model_fields["suite"].default == "builtin:identity"
    models = [spec.ModelSpec, spec.AuditSpec, settings.TrainingConfig, spec.TrainSpec,
              settings.MitigationSettings]
    for name in _SHARED:
        fields = [model.model_fields[name] for model in models if name in model.model_fields]
        assert len(fields) >= 3
        assert all((f.default, f.metadata, f.description) ==
                   (fields[0].default, fields[0].metadata, fields[0].description)
                   for f in fields)


def test_no_module_writes_a_shared_setting_s_default_or_bound_itself():
    """``max_length`` and ``seed`` fields use their annotated type; no function default
    ``max_length=128`` (the number was written in 11 places)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.target.id in _SHARED and path.name in ("settings.py", "spec.py"):
                assert ast.unparse(node.annotation) == _SHARED[node.target.id], path
                assert node.value is None, (path, node.lineno)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = node.args.args + node.args.kwonlyargs
                defaults = dict(zip([a.arg for a in node.args.args][::-1],
                                    node.args.defaults[::-1], strict=False))
                defaults.update({a.arg: d for a, d in zip(node.args.kwonlyargs,
                                                            node.args.kw_defaults, strict=True)})
                for argument in arguments:
                    default = defaults.get(argument.arg)
                    assert not (argument.arg == "max_length" and isinstance(default, ast.Constant)
                                and default.value is not None), (path.name, node.name)


@pytest.mark.parametrize(("command", "model"), [
    ("train", "TrainingConfig"), ("mitigate", "MitigationSettings"), ("predict", "ModelSpec")])
def test_the_cli_options_are_generated_from_the_settings(command, model):
    """Every option of a settings field has the field's default and help, and the command's
    own source declares none of them."""
    import typer.main

    from promptaudit import cli, settings, spec

    fields = getattr(settings, model, None) or getattr(spec, model)
    source_model, generated = getattr(cli, command).settings_options
    assert source_model is fields and generated
    click_command = typer.main.get_command(cli.app).commands[command]
    options = {param.name: param for param in click_command.params}
    for name in generated:
        field = fields.model_fields[name]
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list):
            default = ",".join(f"{value:g}" for value in default)
        assert options[name].default == getattr(default, "value", default), name
        assert options[name].help == field.description and field.description, name
    source = ast.parse(Path(cli.__file__).read_text(encoding="utf-8"))
    function = next(node for node in source.body
                    if isinstance(node, ast.FunctionDef) and node.name == command)
    assert not {a.arg for a in function.args.args} & set(generated)


#: Command options that are spec settings under another name.
_OPTION_ALIASES = {"max_attributed": "departures_max_attributed"}


def test_command_options_that_are_spec_settings_take_the_spec_s_default():
    """An option named like a spec setting with a default (``--top-k``, ``--n-steps``,
    ``--batch-size``, ...) has that default, and cli.py writes no literal default for it."""
    import typer.main

    from promptaudit import cli, spec

    sections = (spec.ModelSpec, spec.ProjectionSpec, spec.AttributionSpec)
    settings = {name: section.model_fields[name] for section in sections
                for name in section.model_fields
                if section.model_fields[name].default not in (None, PydanticUndefined)}
    source = ast.parse(Path(cli.__file__).read_text(encoding="utf-8"))
    checked = 0
    for command in typer.main.get_command(cli.app).commands.values():
        function = next(node for node in source.body if isinstance(node, ast.FunctionDef)
                        and node.name == command.callback.__name__.rstrip("_"))
        literal = {a.arg for a, d in zip(function.args.args[::-1], function.args.defaults[::-1],
                                         strict=False) if isinstance(d, ast.Constant)}
        source_model, generated = getattr(command.callback, "settings_options", (None, ()))
        for param in command.params:
            if param.name in generated and source_model not in sections:
                continue  # a training option (settings.py, checked above), not the spec's
            field = settings.get(_OPTION_ALIASES.get(param.name, param.name))
            if field is None or isinstance(field.default, bool) or param.default is None:
                continue  # None: not given, read from the adapter or the data instead
            checked += 1
            assert param.default == getattr(field.default, "value", field.default), param.name
            assert param.name not in literal, (command.name, param.name)
    assert checked >= 10


def test_a_settings_model_refuses_a_bad_value_in_one_line():
    from promptaudit.settings import TrainingConfig

    with pytest.raises(InputError, match=r"^num_virtual_tokens: 513; must be <= 512$"):
        TrainingConfig(num_virtual_tokens=513)
    with pytest.raises(InputError, match=r"^max_length: 3; must be >= 4$"):
        TrainingConfig(max_length=3)
    assert TrainingConfig(num_virtual_tokens=512, max_length=4).max_length == 4


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


def test_the_result_sections_and_schema_load_without_torch():
    """The typed result sections, their schema and ``gate``'s reader import no heavy stack."""
    code = (
        "import json, sys\n"
        "from promptaudit.result import result_schema, read_result_json\n"
        "import promptaudit.result_sections\n"
        "result_schema()\n"
        "heavy = ('torch', 'transformers', 'fairlearn', 'peft', 'captum')\n"
        "print(json.dumps([m for m in heavy if m in sys.modules]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# ------------------------------------------------------------ function size
#: The longest a function may be, in lines from ``def`` to its last line. The CLI's
#: commands declare their options in the signature (one ``Annotated`` per option), so
#: for them the body alone is measured.
MAX_FUNCTION_LINES = 80


def _function_sizes(path: Path):
    """``(name, lines)`` of every function and method in one source file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.body[0].lineno if path.name == "cli.py" else node.lineno
            yield node.name, node.end_lineno - first + 1


def test_the_size_rule_measures_what_it_says(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("def f(\n    a,\n):\n" + "    a += 1\n" * 80 + "    return a\n")
    assert dict(_function_sizes(source)) == {"f": 84}
    cli = tmp_path / "cli.py"
    cli.write_text(source.read_text())
    assert dict(_function_sizes(cli)) == {"f": 81}


def test_no_function_is_over_80_lines():
    too_long = [
        f"{path.relative_to(SRC)}:{name} ({lines} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, lines in _function_sizes(path)
        if lines > MAX_FUNCTION_LINES
    ]
    assert not too_long, too_long
