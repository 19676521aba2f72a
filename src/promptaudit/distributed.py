"""Data-parallel audits across processes (Hugging Face Accelerate, SPMD).

A plain ``promptaudit run`` never imports Accelerate: :func:`launch_processes` returns
``None``. Under ``accelerate launch --num_processes N -m promptaudit run AUDIT.yaml`` (or
``torchrun``) every process joins (:class:`accelerate.PartialState`: NCCL between GPUs,
gloo on CPUs) and runs the same pipeline on the same data with its own model copy. Only
the forward passes are divided: :meth:`AuditProcesses.predict_proba` (every prediction of a
:class:`ShardedPromptedModel`) and :meth:`AuditProcesses.attribute` cut the texts into the
batches of the single-process schedule (:func:`prediction_batches`,
:func:`promptaudit.attribution.attribution_batches`), deal batch ``b`` to process ``b % N``
(:func:`dealing_order`), and gather the pieces on every process in input order. Every row
is thus computed in the very batch (same padding, same shapes, Shapley seed ``seed + b``)
it would be in one process, so the result equals the single-process one number for number.
The main process alone assembles the result and writes the reports.

Every exchange carries a status: an error in one process (in its share of the work, or
between exchanges: :meth:`AuditProcesses.report_failure`) is sent to the others, every
process raises (its own error or the first one, rebuilt with the same class) and all exit
with the same code; no process is left waiting.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from promptaudit import errors as _errors
from promptaudit.attribution import (
    BATCH_SIZE,
    PromptAttributor,
    attribution_batches,
    budget_summary,
    merge_attributions,
)
from promptaudit.errors import InputError
from promptaudit.prompted_model import PromptedModel

__all__ = [
    "AuditProcesses", "ShardedPromptedModel", "launch_processes", "launched_num_processes",
    "process_device", "prediction_batches", "dealing_order", "attribute_batches",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Built-in errors rebuilt with their own class when they come from another process
#: (the CLI maps them to exit code 2 like the project's own errors).
_REBUILT_BUILTINS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


# ------------------------------------------------------------------ planning
def launched_num_processes() -> int:
    """Number of processes the launcher started (``WORLD_SIZE``; 1 without a launcher)."""
    value = os.environ.get("WORLD_SIZE", "1").strip() or "1"
    try:
        return max(1, int(value))
    except ValueError:
        raise InputError(f"WORLD_SIZE {value!r}: expected a whole number of processes") from None


def process_device(requested: str, accelerator_device: torch.device | str) -> str:
    """The device one process of a multi-process audit puts its model on.

    Parameters
    ----------
    requested : str
        ``model.device`` of the spec: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
    accelerator_device : torch.device or str
        This process's ``PartialState().device`` (``cuda:LOCAL_RANK`` on GPUs).

    Returns
    -------
    str
        ``cpu`` when asked for or without a GPU; otherwise this process's own GPU (it
        replaces a ``cuda:N`` of the spec). ``cuda`` without a GPU is returned for the
        model loader to report.

    Examples
    --------
    >>> process_device("auto", torch.device("cuda", 3))
    'cuda:3'
    >>> process_device("cpu", torch.device("cuda", 3))
    'cpu'
    """
    device = torch.device(accelerator_device)
    if requested == "cpu":
        return "cpu"
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index}"
    return "cpu" if requested == "auto" else requested


def prediction_batches(texts: Sequence[str], *, batch_size: int) -> list[np.ndarray]:
    """Row indices of the batches :meth:`PromptedModel.predict_proba` forms in one process:
    the texts ordered by character length (stable), cut into batches of ``batch_size``.

    Returns
    -------
    list of numpy.ndarray
        Int arrays of at most ``batch_size`` rows; together they hold every index once.

    Examples
    --------
    >>> [b.tolist() for b in prediction_batches(["aaa", "b", "cc", "dddd"], batch_size=3)]
    [[1, 2, 0], [3]]
    """
    order = np.argsort([len(str(t)) for t in texts], kind="stable")
    return [order[start:start + batch_size] for start in range(0, len(order), int(batch_size))]


def dealing_order(n_batches: int, num_processes: int) -> list[int]:
    """Batch indices laid out so that a contiguous split deals batch ``b`` to ``b % N``.

    :meth:`accelerate.PartialState.split_between_processes` gives the first ``n % N``
    processes ``ceil(n / N)`` items and the others ``floor(n / N)``: exactly the sizes of the
    round-robin shares, so concatenating those shares makes the split a round-robin deal.

    Examples
    --------
    >>> dealing_order(5, 2)
    [0, 2, 4, 1, 3]
    """
    return [b for rank in range(num_processes) for b in range(rank, n_batches, num_processes)]


def attribute_batches(prompted: PromptedModel, batches: Sequence[tuple[int, Sequence[str]]],
                      method, *, seed: int = 0, batch_size: int = BATCH_SIZE,
                      progress: bool = False) -> list[tuple[int, dict]]:
    """Attribute batches of the single-process schedule, one call per batch.

    Parameters
    ----------
    prompted : PromptedModel
    batches : sequence of (int, sequence of str)
        ``(batch_index, texts)`` of :func:`~promptaudit.attribution.attribution_batches`.
    method : IntegratedGradients, FeatureAblation or ShapleySampling
        The attribution method, without a budget.
    seed : int
        The audit's seed; batch ``b`` is attributed with ``seed + b`` (as in one process).
    batch_size : int
        The schedule's batch size.

    Returns
    -------
    list of (int, dict)
        ``(batch_index, PromptAttributor.attribute result of that batch)``.
    """
    items: Sequence[tuple[int, Sequence[str]]] = batches
    if progress and batches:
        from tqdm.auto import tqdm

        items = tqdm(batches, desc=f"attribute ({method.name.value})", unit="batch", leave=False)
    # per-batch calls would repeat the convergence warning; the merged result warns once
    attribution_logger = logging.getLogger("promptaudit.attribution")
    level = attribution_logger.level
    attribution_logger.setLevel(logging.ERROR)
    try:
        return [(int(index), PromptAttributor(prompted, method, seed=int(seed) + int(index),
                                              batch_size=batch_size).attribute(list(texts)))
                for index, texts in items]
    finally:
        attribution_logger.setLevel(level)


# ------------------------------------------------------------- the processes
@dataclass(frozen=True)
class _Status:
    """What one process sends in an exchange: its value, or the error it ran into."""

    ok: bool
    value: Any = None
    error_type: str = ""
    error_message: str = ""

    @classmethod
    def failed(cls, exc: BaseException) -> _Status:
        text = str(exc).strip()
        return cls(False, error_type=type(exc).__name__,
                   error_message=text.splitlines()[0] if text else type(exc).__name__)


def _rebuild_error(rank: int, status: _Status) -> Exception:
    message = f"process {rank}: {status.error_message}"
    cls = getattr(_errors, status.error_type, None)
    if isinstance(cls, type) and issubclass(cls, _errors.PromptAuditError):
        return cls(message)
    for builtin in _REBUILT_BUILTINS:
        if builtin.__name__ == status.error_type:
            return builtin(message)
    return RuntimeError(f"process {rank}: {status.error_type}: {status.error_message}")


def launch_processes(*, device: str = "auto") -> AuditProcesses | None:
    """Join the processes a launcher started, or ``None`` for a single process.

    Without a launcher (or with one process) nothing is imported or initialised.
    Otherwise :class:`accelerate.PartialState` sets up the process group (NCCL
    when the processes have GPUs and ``device`` is not ``cpu``, else gloo).

    Parameters
    ----------
    device : str
        The spec's ``model.device``; ``cpu`` keeps GPU machines on gloo and CPUs.
    """
    if launched_num_processes() <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    if state.num_processes != launched_num_processes():
        raise RuntimeError(f"the launcher started {launched_num_processes()} processes but "
                           f"Accelerate joined {state.num_processes}")
    processes = AuditProcesses(state)
    if not processes.is_main:  # the main process logs for all; the others only errors
        logging.getLogger("promptaudit").setLevel(logging.ERROR)
    logger.info("process %d of %d on %s", processes.rank, processes.num_processes,
                processes.accelerator_device)
    return processes


class AuditProcesses:
    """This process's handle on the processes of a launched audit (all run the same code).

    Parameters
    ----------
    state : accelerate.PartialState
        The joined processes.
    """

    def __init__(self, state) -> None:
        self.state = state
        self.rank = int(state.process_index)
        self.num_processes = int(state.num_processes)
        self.accelerator_device = torch.device(state.device)
        self._failed = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_for(self, requested: str) -> str:
        """This process's device for the spec's ``model.device`` (:func:`process_device`)."""
        return process_device(requested, self.accelerator_device)

    # ------------------------------------------------------------ exchanges
    def exchange(self, work: Callable[[], T]) -> list[T]:
        """Run ``work`` here and gather every process's answer, in process order.

        Every process must call this at the same point. If ``work`` raises on any
        process, every process raises: its own error, or the first failing
        process's (rebuilt with the same class, message prefixed ``process R:``).
        """
        from accelerate.utils import gather_object

        if self._failed:
            raise RuntimeError("an earlier exchange failed; the processes no longer run together")
        own: Exception | None = None
        try:
            status = _Status(True, work())
        except Exception as exc:  # sent to the others first, so nobody is left waiting
            own, status = exc, _Status.failed(exc)
        statuses = gather_object([status])
        failures = [(rank, s) for rank, s in enumerate(statuses) if not s.ok]
        if failures:
            self._failed = True
            if own is not None:
                raise own
            raise _rebuild_error(*failures[0]) from None
        return [s.value for s in statuses]

    def on_main(self, work: Callable[[], T]) -> T:
        """``work()`` on the main process only; its value is returned on every process."""
        return self.exchange(work if self.is_main else lambda: None)[0]

    def report_failure(self, exc: BaseException) -> None:
        """Send ``exc``, raised here between exchanges, to the others in their next exchange.

        Does nothing when the processes already know of a failure (the error came
        from an exchange).
        """
        if self._failed or not isinstance(exc, Exception):
            return

        def fail():
            raise exc

        try:
            self.exchange(fail)
        except Exception:  # noqa: S110 -- the caller re-raises ``exc`` itself
            pass

    def close(self) -> None:
        """Leave the process group, all processes together.

        Every process reaches ``close`` (the runner calls it in ``finally``); the
        barrier keeps one process from tearing its connections down while another
        still uses them, which under load made a process abort at exit.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.barrier()
            except Exception:  # noqa: S110 -- a peer already gone: leave anyway
                pass
            dist.destroy_process_group()

    def my_batches(self, n_batches: int) -> list[int]:
        """This process's batch indices of an ``n_batches`` schedule (``b % N == rank``)."""
        with self.state.split_between_processes(
                dealing_order(n_batches, self.num_processes)) as mine:
            return list(mine)

    # ------------------------------------------------------- sharded stages
    def predict_proba(self, prompted: PromptedModel, texts: Sequence[str], *,
                      progress: bool = False) -> np.ndarray:
        """``prompted.predict_proba(texts)`` with the batches divided between the processes.

        Returns
        -------
        numpy.ndarray
            ``(n_texts, n_labels)`` float64 on every process, equal to the
            single-process call.
        """
        texts = [str(t) for t in texts]
        batches = prediction_batches(texts, batch_size=prompted.batch_size)

        def work() -> tuple[np.ndarray, np.ndarray]:
            rows = [batches[b] for b in self.my_batches(len(batches))]
            rows = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
            return rows, PromptedModel.predict_proba(
                prompted, [texts[i] for i in rows], progress=progress and self.is_main)

        out = np.zeros((len(texts), len(prompted.labels)), dtype=np.float64)
        for rows, probs in self.exchange(work):
            if len(rows):
                out[rows] = probs
        return out

    def attribute(self, prompted: PromptedModel, texts: Sequence[str], method, *,
                  seed: int = 0, batch_size: int = BATCH_SIZE, progress: bool = False) -> dict:
        """:meth:`~promptaudit.attribution.PromptAttributor.attribute` with the batches divided.

        Each process attributes its batches of the single-process schedule
        (:func:`attribute_batches`); the pieces are gathered and merged
        (:func:`~promptaudit.attribution.merge_attributions`) on every process.
        The result equals the single-process call.
        """
        budget = getattr(method, "max_gradient_evals_total", None)
        if budget is not None:
            method = dataclasses.replace(method, max_gradient_evals_total=None)
        texts = [str(t) for t in texts]

        def work() -> list[tuple[np.ndarray, dict]]:
            if not texts:  # the attributor's own one-line error
                PromptAttributor(prompted, method).attribute(texts)
            lengths = prompted.encode(texts).attention_mask.sum(dim=1)
            batches = attribution_batches(lengths, batch_size=batch_size,
                                          blocks=budget is not None)
            mine = [(b, [texts[i] for i in batches[b].tolist()])
                    for b in self.my_batches(len(batches))]
            done = attribute_batches(prompted, mine, method, seed=seed, batch_size=batch_size,
                                     progress=progress and self.is_main)
            return [(batches[index], result) for index, result in done]

        pieces = [piece for answer in self.exchange(work) for piece in answer]
        if budget is None:
            return merge_attributions(pieces, n_examples=len(texts), seed=int(seed))
        # Every block was attributed; keep the blocks one process under the budget runs.
        kept, spent = [], 0
        for rows, result in sorted(pieces, key=lambda piece: int(piece[0].min())):
            if kept and spent >= int(budget):
                break
            kept.append((rows, result))
            spent += sum(int(example.get("n_steps") or 0) for example in result["examples"])
        merged = merge_attributions(kept, n_examples=sum(len(rows) for rows, _ in kept),
                                    seed=int(seed))
        merged["budget"] = budget_summary(budget, merged["examples"], len(texts))
        return merged

    def shard(self, prompted: PromptedModel) -> ShardedPromptedModel:
        """``prompted`` whose predictions are divided between the processes."""
        return ShardedPromptedModel.wrap(prompted, self)


class ShardedPromptedModel(PromptedModel):
    """A :class:`PromptedModel` whose :meth:`predict_proba` runs on all processes.

    Built by :meth:`AuditProcesses.shard` on every process; predictions go
    through :meth:`AuditProcesses.predict_proba` (so every process must call
    them at the same point, as the pipeline does), everything else (encoding,
    embeddings, attribution's forward passes) is the local model's.
    """

    processes: AuditProcesses

    @classmethod
    def wrap(cls, prompted: PromptedModel, processes: AuditProcesses) -> ShardedPromptedModel:
        """``prompted`` (same model, tokenizer, prompt and settings), sharded."""
        sharded = cls.__new__(cls)
        sharded.__dict__.update(vars(prompted))
        sharded.processes = processes
        return sharded

    def with_prompt(self, prompt: torch.Tensor | None) -> ShardedPromptedModel:
        """The same model and settings with another prompt (or none), still sharded."""
        return self.wrap(PromptedModel.with_prompt(self, prompt), self.processes)

    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Label probabilities ``(n_texts, n_labels)`` (float64), computed by all processes."""
        return self.processes.predict_proba(self, texts, progress=progress)
