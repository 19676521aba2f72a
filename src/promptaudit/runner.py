"""``promptaudit run`` as one library call, in one process or under a launcher.

:func:`run_audit_command` reads the spec, joins the processes a launcher started
(``accelerate launch`` / ``torchrun``; none without one), runs the audit on every
process (:func:`promptaudit.pipeline.run_audit`), writes the reports on the main
process, and returns the outcome every process agrees on. Errors are raised on
every process (see :mod:`promptaudit.distributed`, "Errors"), so the CLI maps
them to exit codes as it does for every other command.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from promptaudit.atomic import prepare_output_dir
from promptaudit.paths import plan_run
from promptaudit.spec import AuditSpec, check_process_count, load_spec

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptaudit.distributed import AuditProcesses

__all__ = ["AuditRun", "run_audit_command"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditRun:
    """What one process of ``promptaudit run`` ends with.

    Attributes
    ----------
    passed : bool
        Every gate passed (the main process's verdict, on every process).
    result : dict or None
        The result JSON object; None on the processes other than the main one.
    paths : dict or None
        Report kind -> file written; None on the processes other than the main one.
    """

    passed: bool
    result: dict | None = None
    paths: dict[str, Path] | None = None


def run_audit_command(audit: str | Path, out: str | Path, overrides: Sequence[str] = (), *,
                      progress: bool = False, command: str | None = None) -> AuditRun:
    """Run the audit of a spec file and write its four reports into ``out``.

    Parameters
    ----------
    audit : str or Path
        The audit spec (YAML).
    out : str or Path
        Report folder (created if missing; checked writable before any model work).
    overrides : sequence of str
        ``dotted.key=value`` spec overrides.
    progress : bool
        Show progress bars (on the main process).
    command : str, optional
        The command line, recorded in provenance.

    Returns
    -------
    AuditRun
    """
    from promptaudit.result import signing_key_from_env

    signing_key_from_env()  # a key that cannot sign fails now, not after the whole audit
    spec = load_spec(audit, overrides)
    plan_run(spec, out, spec_path=audit).check()  # before any work: never overwrite an input
    from promptaudit.distributed import launch_processes, launched_num_processes

    check_process_count(spec, launched_num_processes())  # before joining the others
    processes = launch_processes(device=spec.model.device)  # None for a single process
    if processes is None:
        return _run(spec, Path(out), progress=progress, command=command)
    try:
        return _run_launched(spec, Path(out), processes, progress=progress, command=command)
    finally:
        processes.close()


def _run(spec: AuditSpec, out: Path, *, progress: bool, command: str | None) -> AuditRun:
    from promptaudit.pipeline import run_audit
    from promptaudit.report import write_reports

    prepare_output_dir(out)
    if spec.mitigation is not None:  # audit before, mitigate, audit after (one process)
        from promptaudit.pipeline import run_audit_with_mitigation

        result = run_audit_with_mitigation(spec, progress=progress, command=command)
    else:
        result = run_audit(spec, progress=progress, command=command)
    paths = write_reports(result, out, name=spec.name)
    return AuditRun(passed=bool(result["passed"]), result=result, paths=paths)


def _run_launched(spec: AuditSpec, out: Path, processes: AuditProcesses, *, progress: bool,
                  command: str | None) -> AuditRun:
    from promptaudit.pipeline import run_audit
    from promptaudit.report import write_reports

    try:
        if processes.is_main:
            prepare_output_dir(out)
        result = run_audit(spec, progress=progress and processes.is_main, command=command,
                           processes=processes)
        paths = write_reports(result, out, name=spec.name) if processes.is_main else None
        passed = processes.on_main(lambda: bool(result["passed"]))
    except Exception as exc:
        processes.report_failure(exc)  # the others raise too, in their next exchange
        raise
    return AuditRun(passed=passed, result=result, paths=paths)
