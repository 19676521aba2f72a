"""The ``promptaudit`` command line: a thin layer over the library.

Each command calls one library function and prints its result. Domain errors
(:class:`~promptaudit.errors.InputError`) become a one-line ``error:`` message
and exit code 2; a failed gate is exit code 1; success is 0.
"""

from __future__ import annotations

import enum
import functools
import importlib
import inspect
import json
import logging
import os
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from promptaudit.errors import InputError, PromptAuditError
from promptaudit.report.escape import escape_controls
from promptaudit.settings import DEFAULT_MAX_LENGTH, MitigationSettings, TrainingConfig
from promptaudit.spec import AttributionSpec, ModelSpec, ProjectionSpec


def _spec_default(section: type, field: str):
    """The default of a spec field (an enum as its value): a command option that is also a
    spec setting takes its default from the spec, never writes one of its own."""
    default = section.model_fields[field].default
    return getattr(default, "value", default)

# The click that typer runs on (recent typer releases vendor their own copy).
_click_errors = importlib.import_module(typer.BadParameter.__module__)


class _OneLineUsageError(_click_errors.UsageError):
    """A usage error shown as one ``error:`` line (click prints a usage block)."""

    def show(self, file=None) -> None:
        command = self.ctx.command_path if self.ctx is not None else "promptaudit"
        message = escape_controls(self.format_message())
        typer.echo(f"error: {command}: {message} (see `{command} --help`)", err=True)


class _OneLineUsageGroup(TyperGroup):
    """Turns click's usage errors (missing option, bad value, unknown command) into one line."""

    @staticmethod
    def _one_line(exc) -> _OneLineUsageError:
        return _OneLineUsageError(" ".join(exc.format_message().split()), exc.ctx)

    def make_context(self, *args, **kwargs):
        try:
            return super().make_context(*args, **kwargs)
        except _click_errors.NoArgsIsHelpError:
            raise
        except _click_errors.UsageError as exc:
            raise self._one_line(exc) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (_click_errors.NoArgsIsHelpError, _OneLineUsageError):
            raise
        except _click_errors.UsageError as exc:
            raise self._one_line(exc) from None


app = typer.Typer(
    name="promptaudit",
    cls=_OneLineUsageGroup,
    help="Audit tuned (soft) prompts for fairness and explain them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

EXIT_OK, EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Hub id, local directory or builtin:minilm.")
]
PromptOption = Annotated[
    str,
    typer.Option(
        "--prompt", "-p", help="PEFT adapter directory, .safetensors/.pt tensor file, or Hub id."
    ),
]
TaskOption = Annotated[
    str | None,
    typer.Option(
        "--task",
        help="sequence-classification, causal-lm or masked-lm (default: from the adapter).",
    ),
]
LabelsOption = Annotated[
    str | None,
    typer.Option(
        "--labels", help="Comma-separated labels in index order (verbalizer words for LM tasks)."
    ),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
DataOption = Annotated[
    Path,
    typer.Option(
        "--data", "-d", help="csv, tsv, jsonl or parquet file (or hf:NAME[:split], builtin:NAME)."
    ),
]
TextColumnOption = Annotated[
    str, typer.Option("--text-column", help="Column holding the input text.")
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the JSON object of the result contract.")
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")]
LabelColumnOption = Annotated[
    str, typer.Option("--label-column", help="Column holding label names or indices.")
]


def _echo(message: object = "", *, err: bool = False) -> None:
    """Print one console message with control characters escaped."""
    typer.echo(escape_controls(message), err=err)


class _EscapingFormatter(logging.Formatter):
    """Log lines as ``LEVEL: message`` with control characters and newlines escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API)
        record.message = escape_controls(record.message, keep_newlines=False)
        return super().formatMessage(record)


#: Libraries whose own warnings (FutureWarning, glyph and convergence notices, ...) a user
#: cannot act on: silenced on the console unless --verbose, where they become log lines.
_LIBRARY_MODULES = (
    r"(transformers|torch|captum|matplotlib|peft|fairlearn|sklearn|datasets|huggingface_hub|"
    r"accelerate|safetensors|pandas|numpy|scipy|tqdm|jinja2)(\.|$)"
)


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_EscapingFormatter("%(levelname)s: %(message)s"))
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, handlers=[handler], force=True
    )
    for noisy in ("transformers", "datasets", "peft", "matplotlib", "httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    for noisy in ("huggingface_hub", "fsspec", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Python warnings come from libraries (promptaudit itself logs): a user cannot act on
    # a FutureWarning or a missing-glyph notice, so they are shown only with --verbose, as
    # one escaped log line without the library's file paths.
    if verbose:
        warnings.showwarning = _log_warning
        warnings.filterwarnings("default", module=_LIBRARY_MODULES)
    else:
        warnings.filterwarnings("ignore")


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with ``prefix`` (said elsewhere already)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` for --verbose: ``WARNING: Category: message`` (no paths)."""
    text = " ".join(str(message).split())
    logging.getLogger("promptaudit.warnings").warning("%s: %s", category.__name__, text)


def _fail(message: str, code: int) -> None:
    typer.echo(f"error: {escape_controls(message, keep_newlines=False)}", err=True)
    raise typer.Exit(code)


def handle_errors(func):
    """Map library errors to exit codes with a one-line message (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except typer.Exit:
            raise
        except PromptAuditError as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, EXIT_BAD_INPUT)
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            where = exc.filename or ""
            _fail(f"{where}: {exc.strerror or type(exc).__name__}".lstrip(": "), EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            _fail("interrupted; previous reports are left as they were", 130)
        except Exception as exc:  # a bug, not bad input: keep it to one line, point to --verbose
            if os.environ.get("PROMPTAUDIT_DEBUG"):
                raise
            detail = str(exc).splitlines()[0] if str(exc) else ""
            _fail(
                f"internal error ({type(exc).__name__}: {detail}); set PROMPTAUDIT_DEBUG=1 "
                "for a traceback",
                EXIT_INTERNAL,
            )

    return wrapper


def _show_progress() -> bool:
    """Progress bars only on an interactive terminal (not in CI logs or pipes)."""
    return sys.stderr.isatty()


class _StageFormatter(logging.Formatter):
    """``promptaudit [0:12] attribution: ... (about 2 min)``: elapsed time and the stage."""

    def __init__(self) -> None:
        super().__init__()
        import time

        self.started = time.monotonic()

    def format(self, record: logging.LogRecord) -> str:
        import time

        elapsed = int(time.monotonic() - self.started)
        text = escape_controls(record.getMessage(), keep_newlines=False)
        return f"promptaudit [{elapsed // 60}:{elapsed % 60:02d}] {text}"


def _configure_progress(quiet: bool) -> bool:
    """Stage lines on stderr unless ``quiet``; returns whether tqdm bars are shown too.

    The library reports stages through the ``promptaudit.progress`` logger
    (:mod:`promptaudit.progress`); this prints them, one line per stage, whether or not
    a terminal is attached. Bars are shown on a terminal only.
    """
    from promptaudit.progress import PROGRESS_LOGGER

    progress_logger = logging.getLogger(PROGRESS_LOGGER)
    for handler in list(progress_logger.handlers):
        if getattr(handler, "promptaudit_stages", False):
            progress_logger.removeHandler(handler)
    progress_logger.propagate = False
    if quiet:
        progress_logger.setLevel(logging.WARNING)
        return False
    handler = logging.StreamHandler(sys.stderr)
    handler.promptaudit_stages = True
    handler.setFormatter(_StageFormatter())
    progress_logger.addHandler(handler)
    progress_logger.setLevel(logging.INFO)
    return _show_progress()


QuietOption = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No stage progress on stderr (results still print)."),
]


def _split_labels(labels: str | None) -> list[str] | None:
    if labels is None:
        return None
    out = [part.strip() for part in labels.split(",") if part.strip()]
    if len(out) < 2:
        raise InputError(f"--labels {labels!r}: give at least two comma-separated labels")
    repeated = sorted({label for label in out if out.count(label) > 1})
    if repeated:
        raise InputError(f"--labels {labels!r}: duplicate label {repeated[0]!r}; each label once")
    return out


def _split_features(text: str | None) -> list[str]:
    """``--sensitive-features a,b``: distinct, non-empty column names."""
    if text is None:
        return []
    features = [part.strip() for part in text.split(",")]
    if not all(features):
        raise InputError(
            f"--sensitive-features {text!r}: an empty column name; give comma-separated columns"
        )
    repeated = sorted({name for name in features if features.count(name) > 1})
    if repeated:
        raise InputError(
            f"--sensitive-features {text!r}: {repeated[0]!r} is listed twice; list each column once"
        )
    return features


def _load_texts(data: Path | str, text_column: str, extra: list[str] | None = None):
    from promptaudit.data import load_table

    frame = load_table(str(data), required_columns=[text_column, *(extra or [])])
    return frame, frame[text_column].astype(str).tolist()


def _load_prompted(model, prompt, task, labels, device, max_length=DEFAULT_MAX_LENGTH,
                   batch_size=_spec_default(ModelSpec, "batch_size"), allow_untrained_head=False):
    from promptaudit.prompted_model import load_prompted_model

    return load_prompted_model(
        model,
        prompt,
        task=task,
        labels=_split_labels(labels),
        device=device,
        max_length=max_length,
        batch_size=batch_size,
        allow_untrained_head=allow_untrained_head,
    )


AllowUntrainedHeadOption = Annotated[
    bool,
    typer.Option(
        "--allow-untrained-head",
        help="Use a task head that neither the model nor the prompt adapter holds "
        "(random weights); refused by default.",
    ),
]


def _settings_options(model: type, names: list[str], **option_names: str):
    """Give a command one ``--option`` per settings field: default, type and help from the field.

    The options are added to the command's signature (typer reads it) before ``device``;
    the command receives their values, parsed (comma-separated lists, enum names checked),
    as one dict ``settings_values``. Option names are ``--field-name`` unless
    ``option_names`` renames one (``suite="--counterfactuals"``).
    """

    def option_name(name: str) -> str:
        return option_names.get(name, "--" + name.replace("_", "-"))

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        params = [p for p in signature.parameters.values() if p.name != "settings_values"]
        at = next((i for i, p in enumerate(params) if p.name == "device"), len(params))
        added = [_option_parameter(name, model.model_fields[name], option_name(name))
                 for name in names]

        @functools.wraps(command)
        def wrapper(**kwargs):
            values = {name: _option_value(model.model_fields[name], kwargs.pop(name),
                                          option_name(name)) for name in names}
            return command(**kwargs, settings_values=values)

        wrapper.__signature__ = signature.replace(parameters=[*params[:at], *added, *params[at:]])
        wrapper.__annotations__ = {p.name: p.annotation
                                   for p in wrapper.__signature__.parameters.values()}
        del wrapper.__wrapped__  # typer reads the new signature, not the command's
        wrapper.settings_options = (model, tuple(names))
        return wrapper

    return decorate


def _option_parameter(name: str, field, option: str) -> inspect.Parameter:
    """The typer parameter of one settings field (lists as comma-separated text)."""
    default = field.get_default(call_default_factory=True)
    kind = _plain_type(field.annotation)
    if isinstance(default, list):
        default = ",".join(f"{value:g}" if isinstance(value, float) else str(value)
                           for value in default)
    shown = kind if kind in (bool, int, float, str) else str  # enums, lists: text
    shown = shown | None if default is None else shown
    default = default.value if isinstance(default, enum.Enum) else default
    return inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default,
        annotation=Annotated[shown, typer.Option(option, help=field.description)],
    )


def _plain_type(kind):
    """``X`` of ``X | None``; any other annotation as it is."""
    given = [arg for arg in typing.get_args(kind) if arg is not type(None)]
    return given[0] if isinstance(kind, types.UnionType) and len(given) == 1 else kind


def _option_value(field, value, option: str):
    """A command-line value as the settings field takes it (a bad one: a one-line error)."""
    kind = _plain_type(field.annotation)
    if value is None or kind in (bool, int, float, str):
        return value
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        if value not in {member.value for member in kind}:
            raise InputError(f"{option} {value!r}: allowed: {', '.join(kind)}")
        return kind(value)
    parts = [part.strip() for part in str(value).split(",") if part.strip()]
    if typing.get_args(kind) != (float,):  # list[str]
        return parts
    try:
        return [float(part) for part in parts]
    except ValueError:
        raise InputError(
            f"{option} {value!r}: give comma-separated numbers, e.g. 10,30,100"
        ) from None


# ------------------------------------------------------------------ commands
@app.command()
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports"),
    retrain: Annotated[
        bool,
        typer.Option(
            "--retrain", help="Train the demo prompt afresh instead of using the shipped one."
        ),
    ] = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run the built-in audit on the embedded default model (builtin:minilm, no network)."""
    _configure_logging(verbose)
    bars = _configure_progress(quiet)
    from promptaudit.demo import demo_prompt_dir, run_demo
    from promptaudit.paths import plan_demo
    from promptaudit.result import signing_key_from_env

    signing_key_from_env()  # a key that cannot sign fails before the audit
    plan_demo(out, prompt=demo_prompt_dir("clean"), retrain=retrain).check()
    result, paths = run_demo(out, retrain=retrain, progress=bars)
    _print_verdict(result, paths)
    raise typer.Exit(EXIT_OK if result["passed"] else EXIT_GATE_FAILED)


@app.command()
@handle_errors
def run(
    audit: Annotated[Path, typer.Argument(help="Audit spec (YAML).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports"),
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a spec key: dotted.key=value (repeatable)."),
    ] = None,
    pdf: Annotated[
        bool,
        typer.Option("--pdf", help="Also write <name>.pdf (headless Chromium print-to-PDF)."),
    ] = False,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Run an audit and write <name>.html, .json, .junit.xml and .md into --out."""
    _configure_logging(verbose)
    bars = _configure_progress(quiet)
    from promptaudit.runner import run_audit_command

    engine = None
    if pdf:  # before any work: no engine is bad input, found at once
        from promptaudit.report.pdf import require_pdf_engine

        engine = require_pdf_engine()
    # Under `accelerate launch` / `torchrun` every process runs the audit; the main one
    # writes the reports, and every process returns (or raises) the same outcome.
    outcome = run_audit_command(
        audit, out, set_ or [], progress=bars, command=_command_line()
    )
    if outcome.result is not None and engine is not None and "json" in outcome.paths:
        from promptaudit.paths import report_files
        from promptaudit.report.pdf import write_pdf

        declared = report_files(Path(outcome.paths["json"]).parent, outcome.result["audit"]["name"])
        outcome.paths["pdf"] = write_pdf(outcome.result, declared["pdf"], engine=engine)
    if outcome.result is not None:
        _print_verdict(outcome.result, outcome.paths)
    raise typer.Exit(EXIT_OK if outcome.passed else EXIT_GATE_FAILED)


@app.command()
@handle_errors
def validate(
    audit: Annotated[Path, typer.Argument(help="Audit spec (YAML).")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a spec key: dotted.key=value.")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Report folder `run` would write (checked).")
    ] = Path("reports"),
) -> None:
    """Check an audit spec and its inputs (paths, formats, columns) without loading a model."""
    _configure_logging(False)
    from promptaudit.spec import check_inputs, load_spec

    spec = load_spec(audit, set_ or [])
    notes = check_inputs(spec, spec_path=audit, out=out)
    for note in notes:
        _echo(f"note: {note}")
    _echo(f"{audit}: valid audit spec {spec.name!r} ({len(spec.gates)} gates)")


@app.command()
@handle_errors
@_settings_options(TrainingConfig, ["num_virtual_tokens", "init", "init_text", "epochs",
                                    "learning_rate", "batch_size", "max_length", "seed"])
def train(
    model: ModelOption,
    data: DataOption,
    text_column: TextColumnOption,
    label_column: LabelColumnOption,
    out: Annotated[Path, typer.Option("--out", help="Adapter directory to write.")],
    labels: LabelsOption = None,
    task: Annotated[
        str, typer.Option("--task", help="sequence-classification or causal-lm.")
    ] = _spec_default(ModelSpec, "task"),
    validation_data: Annotated[
        Path | None,
        typer.Option(
            "--validation-data",
            help="Held-out file with the same columns (default: 10% of --data).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint in --out.")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Train on the first N rows of --data only."),
    ] = None,
    device: DeviceOption = _spec_default(ModelSpec, "device"),
    verbose: VerboseOption = False,
    settings_values: dict | None = None,
) -> None:
    """Train a soft prompt with PEFT prompt tuning and save a PEFT adapter."""
    _configure_logging(verbose)
    from promptaudit.atomic import check_output_dir
    from promptaudit.paths import plan_train
    from promptaudit.training import train_from_table

    # Before any work: --out must be creatable as a folder and must not be an input.
    plan_train(out, data=data, model=model, validation_data=validation_data).check()
    check_output_dir(out)
    config = TrainingConfig(**settings_values)
    # The CLI prints the special-token note itself (below): keep the library's copy of it
    # off the console so it is said once.
    training_logger = logging.getLogger("promptaudit.training")
    said_by_cli = _DropMessages("text init copies special tokens")
    training_logger.addFilter(said_by_cli)
    try:
        result = train_from_table(
            model, str(data), text_column=text_column, label_column=label_column, out_dir=out,
            config=config, labels=_split_labels(labels), limit=limit,
            validation_data=None if validation_data is None else str(validation_data),
            task=task, device=device, resume=resume, progress=_show_progress(),
        )
    finally:
        training_logger.removeFilter(said_by_cli)
    n_val = result.n_validation
    for entry in result.history:
        acc = ("n/a" if entry["val_accuracy"] is None
               else f"{entry['val_accuracy']:.4f} on {n_val} example{'s' * (n_val != 1)}")
        _echo(f"epoch {entry['epoch']}: train loss {entry['train_loss']:.4f}, "
              f"validation accuracy {acc}")
    if result.init_special_tokens:
        _echo("note: the text init copied special tokens into the prompt: "
              + ", ".join(result.init_special_tokens))
    _echo(f"saved PEFT adapter to {out}")


@app.command()
@handle_errors
@_settings_options(ModelSpec, ["max_length"])
def predict(
    model: ModelOption,
    prompt: PromptOption,
    data: DataOption,
    text_column: TextColumnOption,
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV file to write (default: stdout).")
    ] = None,
    task: TaskOption = None,
    labels: LabelsOption = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size")
    ] = _spec_default(ModelSpec, "batch_size"),
    device: DeviceOption = _spec_default(ModelSpec, "device"),
    verbose: VerboseOption = False,
    allow_untrained_head: AllowUntrainedHeadOption = False,
    settings_values: dict | None = None,
) -> None:
    """Predict label probabilities: one row per input with p_<label> and prediction."""
    _configure_logging(verbose)
    from promptaudit.atomic import atomic_write_text, prepare_output_dir
    from promptaudit.prompted_model import predictions_frame

    if out is not None:  # refuse an unwritable --out before the long work
        from promptaudit.paths import plan_predict

        plan_predict(out, data=data, prompt=prompt, model=model).check()
        if out.is_dir():
            raise InputError(f"--out {out}: is a directory; give the path of a CSV file to write")
        prepare_output_dir(out.parent if str(out.parent) else ".")
    _, texts = _load_texts(data, text_column)
    prompted, _, _ = _load_prompted(model, prompt, task, labels, device,
                                    settings_values["max_length"], batch_size,
                                    allow_untrained_head)
    probs = prompted.predict_proba(texts, progress=_show_progress())
    n_truncated = prompted.count_truncated(texts)
    if n_truncated:  # said, not silent: the predictions saw only the first tokens
        logging.getLogger("promptaudit.cli").warning(
            "%d of %d texts were longer than %d tokens and were truncated (raise --max-length "
            "to keep more)",
            n_truncated,
            len(texts),
            prompted.max_length,
        )
    table = predictions_frame(texts, probs, prompted.labels, text_column=text_column)
    csv_text = table.to_csv(index=False)
    if out is None:
        sys.stdout.write(csv_text)
    else:
        atomic_write_text(out, csv_text)
        _echo(f"wrote {len(table)} predictions to {out}", err=True)


@app.command()
@handle_errors
def project(
    model: ModelOption,
    prompt: PromptOption,
    top_k: Annotated[int, typer.Option("--top-k")] = _spec_default(ProjectionSpec, "top_k"),
    metric: Annotated[
        str, typer.Option("--metric", help="cosine, dot or l2.")
    ] = _spec_default(ProjectionSpec, "metric"),
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Optional data to measure the fidelity of the reading."),
    ] = None,
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str | None, typer.Option("--label-column")] = None,
    task: TaskOption = None,
    labels: LabelsOption = None,
    device: DeviceOption = _spec_default(ModelSpec, "device"),
    json_: JsonOption = False,
    verbose: VerboseOption = False,
    allow_untrained_head: AllowUntrainedHeadOption = False,
    instruction: Annotated[
        list[str] | None,
        typer.Option("--instruction", help="A plain-language instruction to compare with the "
                     "soft prompt (repeatable; needs --data). The init text is compared too."),
    ] = None,
    position_importance: Annotated[
        bool,
        typer.Option("--position-importance", help="With --data: the share of decisions "
                     "that change when each virtual token alone is neutralised."),
    ] = False,
    max_attributed: Annotated[
        int,
        typer.Option("--max-attributed", help="Departure rows to attribute (0: none)."),
    ] = _spec_default(ProjectionSpec, "departures_max_attributed"),
    translate: Annotated[
        bool,
        typer.Option("--translate", help="Also search readable words that reproduce the soft "
                     "prompt's decisions (needs --data; long work, progress is logged)."),
    ] = False,
    translate_steps: Annotated[
        int | None, typer.Option("--translate-steps", help="PEZ steps per seed.")
    ] = None,
    translate_restarts: Annotated[
        int | None, typer.Option("--translate-restarts", help="Runs from seeds (at least 2).")
    ] = None,
    translate_seed: Annotated[
        int | None, typer.Option("--translate-seed", help="First seed (split, restarts).")
    ] = None,
    translate_vocabulary: Annotated[
        str | None,
        typer.Option("--translate-vocabulary",
                     help="'words' (whole words, the default) or a word-list file."),
    ] = None,
) -> None:
    """Project each virtual token onto its nearest vocabulary words.

    Nearest words need only the embedding matrix; --task (and a trained head) is
    needed only with --data, where fidelity runs predictions. With --data, the
    init text and every --instruction are ranked by agreement with the soft
    prompt, and the rows where the closest one departs from it are listed.
    --translate also searches a plain-text stand-in for the prompt
    (projection.translation), ranked with the instructions.
    """
    _configure_logging(verbose)
    translate_settings = _translate_settings(
        translate, has_data=data is not None, steps=translate_steps,
        restarts=translate_restarts, seed=translate_seed, vocabulary=translate_vocabulary,
    )
    from promptaudit.projection import format_projection_table, load_for_projection, project_prompt

    if (instruction or position_importance) and data is None:
        option = "--instruction" if instruction else "--position-importance"
        raise InputError(f"{option}: needs --data (the rows the soft prompt is compared on)")
    if max_attributed < 0:
        raise InputError(f"--max-attributed: {max_attributed}; must be an integer >= 0")
    prompted, soft = load_for_projection(
        model, prompt, task=task, labels=_split_labels(labels), device=device,
        needs_predictions=data is not None, allow_untrained_head=allow_untrained_head,
    )
    texts, label_ids = _labelled_texts(data, text_column, label_column, prompted)
    projection = project_prompt(
        prompted, soft_prompt=soft, top_k=top_k, metric=metric, texts=texts, label_ids=label_ids
    )
    if translate_settings is not None:  # before the departures: the translation is ranked too
        from promptaudit.translation import translate_prompt

        projection["translation"] = translate_prompt(
            prompted, texts, label_ids=label_ids, settings=translate_settings
        )
    if texts is not None:
        _explain_projection(prompted, soft, projection, texts, label_ids,
                            instructions=list(instruction or []),
                            with_positions=position_importance, max_attributed=max_attributed)
    if json_:
        typer.echo(json.dumps(projection, indent=2, sort_keys=True))
    else:
        typer.echo(format_projection_table(projection))
        for key in ("position_importance", "departures"):
            if projection.get(key):
                typer.echo(projection[key]["summary"])


def _labelled_texts(data: Path | None, text_column: str, label_column: str | None,
                    prompted) -> tuple[list[str] | None, object]:
    """``project --data``: the texts and (with ``--label-column``) their ``(n,)`` label ids."""
    if data is None:
        return None, None
    from promptaudit.data import encode_labels

    frame, texts = _load_texts(data, text_column, [label_column] if label_column else [])
    if not label_column:
        return texts, None
    return texts, encode_labels(frame[label_column], prompted.labels, source=str(data),
                                column=label_column)


def _translate_settings(translate: bool, *, has_data: bool, **options):
    """``project --translate``: the translation settings of the options, or None without it."""
    if not translate and all(value is None for value in options.values()):
        return None
    if not translate:
        raise InputError("--translate-steps/--translate-restarts/--translate-seed/"
                         "--translate-vocabulary: given without --translate; add --translate")
    if not has_data:
        raise InputError("--translate: needs --data (the rows the translation is fitted "
                         "and measured on)")
    from promptaudit.spec import TranslateSpec

    settings = TranslateSpec.from_options(**options).settings()
    logging.getLogger("promptaudit.translation").setLevel(logging.INFO)
    return settings


def _explain_projection(prompted, soft, projection: dict, texts, label_ids, *,
                        instructions: list[str], with_positions: bool,
                        max_attributed: int) -> None:
    """``project --data``: instructions and departures (and position importance if asked)."""
    from promptaudit.departures import explain_departures, plain_language_candidates

    probs = prompted.predict_proba(texts)
    if with_positions:
        from promptaudit.position_importance import position_importance

        projection["position_importance"] = position_importance(
            prompted, texts, soft_probs=probs, max_examples=len(texts))
    candidates = plain_language_candidates(prompted, soft, projection, instructions)
    if candidates:
        labels = prompted.labels
        positive = len(labels) - 1 if len(labels) == 2 else None  # as the audit's default
        instructions_out, departures = explain_departures(
            prompted, texts, soft_probs=probs, candidates=candidates, positive=positive,
            label_ids=label_ids, max_attributed=max_attributed)
        projection["instructions"] = instructions_out
        projection["departures"] = departures


def _steps_number(value: str) -> int | str:
    """``--n-steps`` text as an integer where it is one (the method names a bad value)."""
    try:
        return int(value)
    except ValueError:
        return value


@app.command()
@handle_errors
def attribute(
    model: ModelOption,
    prompt: PromptOption,
    data: DataOption,
    text_column: TextColumnOption,
    method: Annotated[
        str,
        typer.Option(
            "--method", help="integrated_gradients, feature_ablation or shapley_sampling."
        ),
    ] = _spec_default(AttributionSpec, "method"),
    n_steps: Annotated[
        str,
        typer.Option("--n-steps", help="'auto' (adaptive, within --delta-tolerance) or a "
                     "fixed number of integrated-gradients steps."),
    ] = _spec_default(AttributionSpec, "n_steps"),
    delta_tolerance: Annotated[
        float,
        typer.Option("--delta-tolerance", help="Completeness tolerance per example "
                     "(probability points) for --n-steps auto."),
    ] = _spec_default(AttributionSpec, "delta_tolerance"),
    max_gradient_evals: Annotated[
        int,
        typer.Option("--max-gradient-evals", help="Most gradient evaluations per example "
                     "with --n-steps auto; an example that needs more is reported as not "
                     "converged."),
    ] = _spec_default(AttributionSpec, "max_gradient_evals"),
    baseline: Annotated[
        str, typer.Option("--baseline", help="pad, zero or mean.")
    ] = _spec_default(AttributionSpec, "baseline"),
    max_examples: Annotated[
        int, typer.Option("--max-examples")
    ] = _spec_default(AttributionSpec, "max_examples"),
    target: Annotated[
        str | None, typer.Option("--target", help="Label to explain (default: the predicted one).")
    ] = None,
    sensitive_features: Annotated[
        str | None,
        typer.Option(
            "--sensitive-features", help="Comma-separated columns for per-group attribution."
        ),
    ] = None,
    task: TaskOption = None,
    labels: LabelsOption = None,
    device: DeviceOption = _spec_default(ModelSpec, "device"),
    json_: JsonOption = False,
    verbose: VerboseOption = False,
    allow_untrained_head: AllowUntrainedHeadOption = False,
) -> None:
    """Attribute predictions to prompt positions and input tokens with Captum."""
    _configure_logging(verbose)
    from promptaudit.attribution import (
        PromptAttributor,
        attribution_method,
        format_attribution_summary,
        summarise_groups,
    )

    features = _split_features(sensitive_features)
    frame, texts = _load_texts(data, text_column, features)
    prompted, _, _ = _load_prompted(model, prompt, task, labels, device,
                                    allow_untrained_head=allow_untrained_head)
    chosen = attribution_method(method, n_steps=n_steps if n_steps == "auto"
                                else _steps_number(n_steps), delta_tolerance=delta_tolerance,
                                max_gradient_evals=max_gradient_evals, baseline=baseline)
    attribution = PromptAttributor(prompted, chosen, progress=_show_progress()).attribute(
        texts, target=target, max_examples=max_examples)
    if features:
        attribution["by_group"] = summarise_groups(
            attribution, frame[features].iloc[:attribution["n_examples"]])
    if json_:
        typer.echo(json.dumps(attribution, indent=2, sort_keys=True))
    else:
        _echo(format_attribution_summary(attribution))


@app.command()
@handle_errors
def gate(
    result: Annotated[Path, typer.Argument(help="A result JSON written by `promptaudit run`.")],
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy",
            help="The organisation's gate policy (YAML: inconclusive, require_signature, "
            "gates). Its gates, not the run's, decide; a run whose own gates were weaker fails.",
        ),
    ] = None,
) -> None:
    """Re-check a result's gates: exit 0 if all pass, 1 if one fails, 2 on bad input."""
    _configure_logging(False)
    from promptaudit.gates import evaluate_gates, policy_of
    from promptaudit.result import SIGNING_KEY_ENV, read_result, signing_key_from_env

    if policy is not None:
        from promptaudit.gate_policy import load_gate_policy

        policy_spec = load_gate_policy(policy)
        if policy_spec.require_signature and signing_key_from_env() is None:
            raise InputError(
                f"{policy}: require_signature: true, but {SIGNING_KEY_ENV} is not set; set it "
                "to the team's signing secret so the result's signature can be checked"
            )
    data, typed = read_result(result)  # the typed result is read once, strictly, here
    if policy is not None:
        _gate_with_policy(result, data, typed, policy, policy_spec)
        return
    spec = (data.get("audit") or {}).get("spec", {})
    gates = evaluate_gates(spec.get("gates", []), typed, inconclusive=policy_of(spec))
    for entry in gates:
        _echo(_gate_word(entry) + entry["message"])
    passed = all(entry["passed"] for entry in gates)
    _echo_signature_note(data)
    _echo(f"{result}: {'all gates pass' if passed else 'a gate failed'} ({len(gates)} checked)")
    raise typer.Exit(EXIT_OK if passed else EXIT_GATE_FAILED)


def _echo_signature_note(data: dict, *, unchecked: bool = True) -> None:
    """Say whether the signature was checked (and, if ``unchecked``, when it was not)."""
    from promptaudit.result import SIGNING_KEY_ENV

    if os.environ.get(SIGNING_KEY_ENV) is not None:
        _echo("note: checksum and signature verified")
    elif unchecked and "hmac_sha256" in (data.get("integrity") or {}):
        _echo(
            f"note: the result is signed, but {SIGNING_KEY_ENV} is not set: signature not checked"
        )


def _gate_with_policy(result: Path, data: dict, typed, policy: Path, policy_spec) -> None:
    """``gate --policy``: the policy's gates on the recorded figures, and weaker run settings
    (``data`` the result's JSON object, ``typed`` the :class:`AuditResult` read from it)."""
    from promptaudit.gate_policy import check_result_against_policy

    check = check_result_against_policy(typed, policy_spec)
    _echo(f"policy {policy}: {len(check['gates'])} gate(s), inconclusive: "
          f"{policy_spec.inconclusive.value}, require_signature: "
          f"{str(policy_spec.require_signature).lower()}")
    for entry in check["gates"]:
        message = entry["message"].replace(
            "under gate_policy.inconclusive:", "under the policy's inconclusive:"
        )
        _echo(_gate_word(entry) + message)
    for entry in check["weaker"]:
        word = "MISSING  " if entry["kind"] == "missing" else "WEAKER  "
        _echo(word + entry["message"])
    _echo_signature_note(data, unchecked=policy_spec.require_signature is False)
    if check["passed"]:
        verdict = "all policy gates pass"
    elif not check["gates_passed"]:
        verdict = "a policy gate failed"
    else:
        verdict = "the run's own gates were weaker than the policy"
    if check["weaker"] and not check["gates_passed"]:
        verdict += "; the run's own gates were weaker than the policy"
    _echo(f"{result}: {verdict} ({len(check['gates'])} checked against {policy})")
    raise typer.Exit(EXIT_OK if check["passed"] else EXIT_GATE_FAILED)


@app.command()
@handle_errors
@_settings_options(MitigationSettings, ["suite", "features", "weights", "max_accuracy_drop",
                                        "group_weight", "epochs", "learning_rate", "batch_size",
                                        "max_length", "validation_fraction", "seed"],
                   suite="--counterfactuals")
def mitigate(
    model: ModelOption,
    prompt: PromptOption,
    data: DataOption,
    text_column: TextColumnOption,
    label_column: LabelColumnOption,
    out: Annotated[Path, typer.Option("--out", help="Folder for the mitigated adapter.")],
    labels: LabelsOption = None,
    positive_label: Annotated[
        str | None, typer.Option("--positive-label", help="Default: the last of two labels.")
    ] = None,
    pair_column: Annotated[
        str | None,
        typer.Option("--pair-column", help="Rows sharing this id are variants (replaces a suite)."),
    ] = None,
    group_column: Annotated[
        str | None,
        typer.Option("--group-column", help="Group column for the optional group penalty."),
    ] = None,
    unlabelled_data: Annotated[
        Path | None,
        typer.Option(
            "--unlabelled-data",
            help="Texts without labels (same text column) added to the pairing loss only.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Reuse finished candidates and checkpoints in --out.")
    ] = False,
    device: DeviceOption = _spec_default(ModelSpec, "device"),
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
    settings_values: dict | None = None,
) -> None:
    """Re-tune a prompt with counterfactual logit pairing; exit 1 if no weight meets the budget."""
    _configure_logging(verbose)
    from promptaudit.atomic import check_output_dir
    bars = _configure_progress(quiet)
    from promptaudit.mitigation import mitigate_from_table
    from promptaudit.paths import plan_mitigate
    from promptaudit.report.before_after import tradeoff_markdown

    settings = MitigationSettings(**settings_values)
    # Before any work: --out is a folder of its own, holding no input and inside none.
    plan_mitigate(
        out, data=data, prompt=prompt, model=model, unlabelled_data=unlabelled_data,
        suite=None if pair_column else settings.suite,
    ).check()
    check_output_dir(out)
    result = mitigate_from_table(
        model, prompt, str(data), text_column=text_column, label_column=label_column,
        out_dir=out, settings=settings, labels=_split_labels(labels), pair_column=pair_column,
        group_column=group_column,
        unlabelled_data=None if unlabelled_data is None else str(unlabelled_data),
        positive_label=positive_label, device=device, resume=resume, progress=bars,
    )
    typer.echo(tradeoff_markdown(result.table, settings.max_accuracy_drop), nl=False)
    typer.echo(result.message)
    for kind, path in sorted(result.paths.items()):
        typer.echo(f"  {kind}: {path}")
    raise typer.Exit(EXIT_OK if result.mitigated else EXIT_GATE_FAILED)


@app.command()
@handle_errors
def compare(
    before: Annotated[Path, typer.Argument(help="Result JSON of the earlier audit.")],
    after: Annotated[Path, typer.Argument(help="Result JSON of the later audit.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write comparison.html/.md/.json here.")
    ] = None,
    max_regression: Annotated[
        float | None,
        typer.Option(
            "--max-regression",
            help="Exit 1 if a gate metric got worse by more, its after-interval included "
            "(a change the interval cannot tell from the tolerance is inconclusive).",
        ),
    ] = None,
    allow_different: Annotated[
        bool,
        typer.Option(
            "--allow-different",
            help="Compare results measured unlike (other data, features, labels, model, "
            "baselines) and mark every affected row, instead of refusing (exit 2).",
        ),
    ] = False,
    inconclusive: Annotated[
        str | None,
        typer.Option(
            "--inconclusive",
            help="fail or pass: what an inconclusive regression counts as (default: the "
            "after result's gate_policy.inconclusive).",
        ),
    ] = None,
) -> None:
    """Compare two results metric by metric; with --max-regression, exit 1 on a regression."""
    _configure_logging(False)
    from promptaudit.compare import compare_results, comparison_markdown, write_comparison
    from promptaudit.paths import plan_compare
    from promptaudit.result import read_result_json

    plan_compare(before, after, out).check()  # before reading: never overwrite an input
    comparison = compare_results(
        read_result_json(before),
        read_result_json(after),
        max_regression=max_regression,
        allow_different=allow_different,
        inconclusive=inconclusive,
    )
    for sentence in comparison["differences"]:
        _echo(f"warning: not like for like: {sentence}", err=True)
    typer.echo(comparison_markdown(comparison), nl=False)
    if out is not None:
        for kind, path in sorted(write_comparison(comparison, out).items()):
            typer.echo(f"  {kind}: {path}")
    raise typer.Exit(EXIT_OK if comparison["passed"] else EXIT_GATE_FAILED)


@app.command()
@handle_errors
def trend(
    results: Annotated[
        list[Path], typer.Argument(help="Result JSONs of the same audit, one per period.")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write trend.html/.md/.json here.")
    ] = None,
    drift_alert: Annotated[
        float,
        typer.Option("--drift-alert", help="Flag an impact ratio that moves more than this."),
    ] = 0.05,
) -> None:
    """Bias-audit rates and impact ratios across audit periods; exit 1 on a flag."""
    _configure_logging(False)
    from promptaudit.paths import plan_trend
    from promptaudit.report.trend import trend_markdown, write_trend
    from promptaudit.result import read_result_json
    from promptaudit.trend import compute_trend

    plan_trend(results, out).check()
    data = [read_result_json(path) for path in results]
    computed = compute_trend(data, sources=[str(path) for path in results],
                             drift_alert=drift_alert)
    typer.echo(escape_controls(trend_markdown(computed)), nl=False)
    if out is not None:
        for kind, path in sorted(write_trend(computed, out).items()):
            _echo(f"  {kind}: {path}")
    raise typer.Exit(EXIT_GATE_FAILED if computed["flagged"] else EXIT_OK)


@app.command("pdf")
@handle_errors
def pdf_command(
    result: Annotated[Path, typer.Argument(help="A result JSON written by `promptaudit run`.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="The PDF to write (default: RESULT with .pdf).")
    ] = None,
) -> None:
    """Render a result's report to PDF (headless Chromium print-to-PDF) for archiving."""
    _configure_logging(False)
    from promptaudit.paths import plan_pdf
    from promptaudit.report.pdf import require_pdf_engine, write_pdf
    from promptaudit.result import read_result_json

    plan = plan_pdf(result, out)
    plan.check()
    engine = require_pdf_engine()
    path = write_pdf(read_result_json(result), plan.path("--out"), engine=engine)
    _echo(f"pdf: {path}")


@app.command()
@handle_errors
def card(
    result: Annotated[Path, typer.Argument(help="A result JSON written by `promptaudit run`.")],
    adapter: Annotated[
        Path, typer.Option("--adapter", help="The adapter folder whose README.md to write.")
    ],
) -> None:
    """Write or update the adapter's Hugging Face model card (README.md) from a result."""
    _configure_logging(False)
    from promptaudit.paths import plan_card
    from promptaudit.report.model_card import write_model_card
    from promptaudit.result import read_result_json

    plan_card(result, adapter).check()
    path = write_model_card(read_result_json(result), adapter, result_path=result)
    _echo(f"model card: {path}")


# ------------------------------------------------------------------ helpers
def _gate_word(entry: dict) -> str:
    return "INCONCLUSIVE  " if entry.get("status") == "inconclusive" else (
        "PASS  " if entry["passed"] else "FAIL  "
    )


def _print_verdict(result: dict, paths: dict) -> None:
    from promptaudit.report._common import competence_sentence, verdict_word

    competence = competence_sentence(result)
    if competence:
        _echo(competence)
    for entry in result.get("gates", []):
        _echo(_gate_word(entry) + entry["message"])
    verdict = "PASSED" if result.get("passed") else "FAILED"
    if verdict_word(result) == "INCONCLUSIVE":
        verdict = f"INCONCLUSIVE (counted as {verdict} under gate_policy.inconclusive)"
    _echo(f"audit {result['audit']['name']}: {verdict}")
    for kind, path in sorted(paths.items()):
        _echo(f"  {kind}: {path}")
    for kind, path in _written_adapters(result):
        _echo(f"  {kind}: {path}")


def _written_adapters(result: dict) -> list[tuple[str, str]]:
    """``(what, folder)`` of the adapters the audit wrote (a trained or a mitigated prompt)."""
    out = []
    prompt = (result.get("provenance") or {}).get("prompt") or {}
    if prompt.get("trained_in_audit") and prompt.get("source"):
        out.append(("trained prompt", str(prompt["source"])))
    adapter = (result.get("mitigation") or {}).get("adapter")
    if adapter:
        out.append(("mitigated prompt", str(adapter)))
    return out


def _command_line() -> str:
    return " ".join(["promptaudit", *sys.argv[1:]])


def main() -> None:
    """Console-script entry point."""
    # Idle OpenMP threads sleep instead of spinning: on a shared or busy machine spinning
    # threads made a 2-thread MiniLM forward ~3x slower than 1 thread. Set before torch loads.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    app()


if __name__ == "__main__":
    main()
