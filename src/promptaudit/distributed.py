"""Devices, precision and data-parallel audits across processes (Hugging Face Accelerate).

One process
-----------
A plain ``promptaudit run`` (no launcher) never imports Accelerate or
``torch.distributed``: :func:`launch_processes` returns ``None`` and the pipeline
runs as it always has. The only thing this module adds there is
:func:`run_attribution`, which runs attribution in float32 (below).

Several processes
-----------------
``accelerate launch --multi_gpu --num_processes N -m promptaudit run AUDIT.yaml``
(or ``torchrun --nproc_per_node N -m promptaudit run AUDIT.yaml``) starts N
copies of the command. :func:`launch_processes` joins them into one process
group (:class:`accelerate.PartialState`: NCCL between GPUs, gloo on CPUs) plus a
gloo group for the Python objects exchanged here. Then:

* the **main process** (rank 0) runs :func:`promptaudit.pipeline.run_audit`
  exactly as a single process does, except that its model is a
  :class:`ShardedPromptedModel`: every :meth:`~PromptedModel.predict_proba`
  call (evaluation predictions, counterfactual variants, the projected-prompt
  fidelity check, the baselines) and :func:`run_attribution` send each process
  its shard, run the main process's own shard, and gather the answers back in
  input order. Projection, fairness metrics, bootstrap intervals, gates and the
  reports are computed by the main process alone;
* every **other process** runs :meth:`AuditProcesses.serve`: it loads the same
  model and prompt on its own device (``accelerator.device``), answers the main
  process's requests for its shard, writes nothing, and exits with the main
  process's exit code.

Shards are whole batches of the single-process schedule: texts are ordered the
way a single process orders them (:meth:`PromptedModel.predict_proba` by
character length, :func:`~promptaudit.attribution.attribute_prompt` by token
length, both stable), cut into the same batches, and batch ``b`` goes to process
``b % N``. Every row is therefore computed in exactly the batch (same padding,
same shapes) it would be in one process, the gathered rows are put back at their
original indices, and the result equals the single-process result number for
number (same hardware and threads; ``provenance.num_processes`` records N).
Interleaving batches keeps the shards balanced although the batches grow longer
along the order. Shapley sampling draws the permutations of batch ``b`` from
``seed + b`` in one process, and so it does here.

Precision
---------
A model loaded in ``bfloat16`` or ``float16`` predicts in that precision, but
integrated gradients in half precision do not converge (the convergence delta
is of the order of the attributions themselves). :func:`float32_model` upcasts
the model in place for attribution (the half-precision weights and the prompt
are represented exactly in float32, so the float32 model computes the same
function with float32 arithmetic) and restores every tensor to its original
dtype afterwards, bit for bit; this needs memory for the float32 weights while
attribution runs. Predictions, fairness and baselines use the model as loaded.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import inspect
import logging
import numbers
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from promptaudit import errors as _errors
from promptaudit.errors import InputError, PromptAuditError
from promptaudit.prompted import PromptedModel

__all__ = [
    "AuditProcesses",
    "ShardedPromptedModel",
    "launch_processes",
    "launched_num_processes",
    "process_device",
    "prediction_shards",
    "attribution_shards",
    "attribute_batches",
    "merge_attributions",
    "float32_model",
    "run_attribution",
    "TIMEOUT_ENV",
    "DEFAULT_TIMEOUT_S",
]

logger = logging.getLogger(__name__)

#: Environment variable: seconds a process waits for another (default :data:`DEFAULT_TIMEOUT_S`).
TIMEOUT_ENV = "PROMPTAUDIT_DIST_TIMEOUT"
#: Workers wait for the main process while it computes fairness metrics and bootstrap
#: intervals (or trains a prompt in the audit); two hours covers large audits.
DEFAULT_TIMEOUT_S = 7200

_STOP = "stop"


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
        ``cpu`` when asked for or when the process has no GPU; otherwise this
        process's own GPU (a ``cuda:N`` in the spec is replaced by it: each process
        holds one GPU). ``cuda`` on a process without a GPU is returned as is, so
        the model loader reports it.

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


def _batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def prediction_shards(texts: Sequence[str], *, batch_size: int,
                      num_processes: int) -> list[np.ndarray]:
    """Row indices each process predicts, in the order it should predict them.

    The texts are ordered by character length (stable) and cut into batches of
    ``batch_size``, as :meth:`PromptedModel.predict_proba` does in one process;
    batch ``b`` goes to process ``b % num_processes``. A process's rows are its
    batches one after the other, still in length order, so ``predict_proba`` on
    them forms exactly those batches again.

    Returns
    -------
    list of numpy.ndarray
        ``num_processes`` int arrays; together they hold every index once.

    Examples
    --------
    >>> [s.tolist() for s in prediction_shards(["aaa", "b", "cc", "dddd"], batch_size=1,
    ...                                         num_processes=2)]
    [[1, 0], [2, 3]]
    """
    order = np.argsort([len(str(t)) for t in texts], kind="stable")
    return _deal(_batches(order, int(batch_size)), num_processes)


def attribution_shards(lengths: Sequence[int] | np.ndarray | torch.Tensor, *, batch_size: int,
                       num_processes: int) -> list[list[tuple[int, np.ndarray]]]:
    """Attribution batches of each process: ``(batch_index, row_indices)`` pairs.

    ``lengths`` are the token counts of the texts (``(n,)``); they are ordered
    (stable) and cut into batches as :func:`~promptaudit.attribution.attribute_prompt`
    does in one process, and batch ``b`` goes to process ``b % num_processes``.
    """
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.cpu()
    order = torch.argsort(torch.as_tensor(lengths), stable=True).numpy()
    batches = list(enumerate(_batches(order, int(batch_size))))
    return [batches[rank::num_processes] for rank in range(num_processes)]


def _deal(batches: list[np.ndarray], num_processes: int) -> list[np.ndarray]:
    shards = []
    for rank in range(num_processes):
        mine = batches[rank::num_processes]
        shards.append(np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64))
    return shards


# ----------------------------------------------------------------- precision
def _floating_tensors(model: torch.nn.Module) -> Iterator[torch.Tensor]:
    seen: set[int] = set()
    for module in model.modules():
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None and tensor.is_floating_point() and id(tensor) not in seen:
                seen.add(id(tensor))
                yield tensor


@contextlib.contextmanager
def float32_model(prompted: PromptedModel) -> Iterator[PromptedModel]:
    """The prompted model computing in float32, for attribution.

    A float32 model is yielded as it is. A half-precision one is upcast in place
    (parameters and buffers; tied weights stay tied) and a float32 view of it with
    the same prompt values is yielded; on exit every tensor gets its original
    dtype back. Half-precision values are exact in float32, so the round trip
    leaves the model bit for bit as it was.

    Parameters
    ----------
    prompted : PromptedModel
        Any precision; its prompt ``(num_virtual_tokens, hidden)`` may be None.

    Yields
    ------
    PromptedModel
        In float32, sharing the model (do not use ``prompted`` inside the block).
    """
    if prompted.dtype == torch.float32:
        yield prompted
        return
    model = prompted.model
    restore = []
    for tensor in _floating_tensors(model):
        if tensor.dtype != torch.float32:
            restore.append((tensor, tensor.dtype))
            tensor.data = tensor.data.to(torch.float32)
    logger.info("attribution: model upcast from %s to float32", prompted.dtype)
    try:
        yield PromptedModel(
            model, prompted.tokenizer,
            None if prompted.prompt is None else prompted.prompt.to(torch.float32),
            task=prompted.task, labels=prompted.labels, max_length=prompted.max_length,
            batch_size=prompted.batch_size,
        )
    finally:
        for tensor, dtype in restore:
            tensor.data = tensor.data.to(dtype)


# --------------------------------------------------------------- attribution
def _attribution_batch_size(options: Mapping[str, Any]) -> int:
    from promptaudit.attribution import attribute_prompt

    size = options.get("batch_size")
    if size is None:
        size = inspect.signature(attribute_prompt).parameters["batch_size"].default
    return int(size)


@contextlib.contextmanager
def _quiet_attribution_log() -> Iterator[None]:
    # per-batch calls would repeat the convergence warning; the merged result warns once
    attribution_logger = logging.getLogger("promptaudit.attribution")
    level = attribution_logger.level
    attribution_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        attribution_logger.setLevel(level)


def attribute_batches(prompted: PromptedModel, batches: Sequence[tuple[int, Sequence[str]]], *,
                      seed: int = 0, batch_size: int | None = None, progress: bool = False,
                      **options) -> list[tuple[int, dict]]:
    """Attribute batches of the single-process schedule, one call per batch, in float32.

    Parameters
    ----------
    prompted : PromptedModel
    batches : sequence of (int, sequence of str)
        ``(batch_index, texts)``: the texts of batch ``batch_index`` in the order
        :func:`attribution_shards` gives.
    seed : int
        The audit's seed; batch ``b`` is attributed with ``seed + b`` (Shapley
        permutations of batch ``b`` in one process).
    batch_size : int, optional
        The schedule's batch size (``attribute_prompt``'s default if None).
    **options
        Passed to :func:`~promptaudit.attribution.attribute_prompt` (``method``,
        ``n_steps``, ``baseline``, ``target``, ``n_samples``, ...).

    Returns
    -------
    list of (int, dict)
        ``(batch_index, attribute_prompt result of that batch)``.
    """
    from promptaudit.attribution import attribute_prompt

    size = _attribution_batch_size({"batch_size": batch_size})
    items: Sequence[tuple[int, Sequence[str]]] = batches
    if progress and batches:
        from tqdm.auto import tqdm

        items = tqdm(batches, desc=f"attribute ({options.get('method', 'integrated_gradients')})",
                     unit="batch", leave=False)
    out = []
    with float32_model(prompted) as model, _quiet_attribution_log():
        for index, texts in items:
            result = attribute_prompt(model, list(texts), seed=int(seed) + int(index),
                                      max_examples=len(texts), batch_size=size, **options)
            out.append((int(index), result))
    return out


def merge_attributions(pieces: Sequence[tuple[Sequence[int], dict]], *, n_examples: int,
                       seed: int = 0, sensitive_features: pd.DataFrame | None = None,
                       min_group_size: int | None = None) -> dict:
    """One ``attribution`` object from results over disjoint sets of rows.

    The per-example entries are put at their rows and the summaries
    (``prompt_share``, ``per_position``, ``per_position_abs``,
    ``max_convergence_delta``, ``by_group``) are recomputed over all rows the way
    :func:`~promptaudit.attribution.attribute_prompt` computes them.

    Parameters
    ----------
    pieces : sequence of (sequence of int, dict)
        ``(rows, result)``: ``result["examples"][i]`` is the example of row ``rows[i]``.
    n_examples : int
        Rows in all; every row must be covered once.
    seed : int
        Recorded as the result's ``seed``.
    sensitive_features : pandas.DataFrame, optional
        ``(n_examples, n_features)`` in row order; adds ``by_group``.
    min_group_size : int, optional
        Per-group attribution's small-group rule (``attribute_prompt``'s default if None).

    Returns
    -------
    dict
        The ``attribution`` object of the result contract.
    """
    from promptaudit.attribution import (
        CONVERGENCE_WARNING,
        DEFAULT_MIN_GROUP_SIZE,
        convergence_summary,
        group_attribution,
    )

    examples: list[dict | None] = [None] * n_examples
    for rows, part in pieces:
        for row, example in zip(rows, part["examples"], strict=True):
            examples[int(row)] = example
    missing = [i for i, e in enumerate(examples) if e is None]
    if missing:
        raise RuntimeError(f"attribution: rows {missing[:5]} came back from no process")
    first = next(part for _, part in pieces)
    prompt_attr = np.array([e["prompt_attributions"] for e in examples], dtype=np.float64)
    abs_prompt = np.abs(prompt_attr).sum(axis=1)
    abs_input = np.array([
        np.abs(np.asarray(e["token_attributions"], dtype=np.float64)).sum()
        if e["token_attributions"] is not None else abs(e["input_attribution"])
        for e in examples
    ])
    denominator = abs_prompt + abs_input
    shares = np.divide(abs_prompt, denominator, out=np.zeros(n_examples), where=denominator > 0)
    deltas = [e["convergence_delta"] for e in examples]
    has_delta = any(d is not None for d in deltas)
    max_delta = (float(np.abs(np.array([np.nan if d is None else d for d in deltas])).max())
                 if has_delta else None)
    merged = dict(first)
    merged.update({
        "seed": int(seed),
        "n_examples": n_examples,
        "prompt_share": float(shares.mean()),
        "per_position": [float(v) for v in prompt_attr.mean(axis=0)],
        "per_position_abs": [float(v) for v in np.abs(prompt_attr).mean(axis=0)],
        "max_convergence_delta": max_delta,
        "examples": examples,
        "by_group": None if sensitive_features is None
        else group_attribution(prompt_attr, sensitive_features, error_scale=max_delta,
                               min_group_size=DEFAULT_MIN_GROUP_SIZE if min_group_size is None
                               else int(min_group_size)),
    })
    merged.update(convergence_summary(examples, delta_tolerance=first.get("delta_tolerance"),
                                      max_gradient_evals=first.get("max_gradient_evals")))
    if max_delta is not None and max_delta > CONVERGENCE_WARNING:
        logger.warning("integrated gradients: max |convergence delta| %.3f exceeds %.2f; the "
                       "integral is coarse, raise n_steps (now %s)", max_delta,
                       CONVERGENCE_WARNING, merged.get("n_steps"))
    return merged


def _sensitive_rows(sensitive_features, n_texts: int) -> pd.DataFrame | None:
    from promptaudit.attribution import SENSITIVE_ROWS_MESSAGE

    if sensitive_features is None:
        return None
    if isinstance(sensitive_features, pd.Series):
        frame = sensitive_features.to_frame(name=sensitive_features.name or "sensitive_feature")
    elif isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features
    else:
        frame = pd.DataFrame(dict(sensitive_features) if isinstance(sensitive_features, Mapping)
                             else sensitive_features)
    if len(frame) != n_texts:
        raise InputError(SENSITIVE_ROWS_MESSAGE.format(rows=len(frame), texts=n_texts))
    return frame.reset_index(drop=True)


def run_attribution(prompted: PromptedModel, texts: Sequence[str], **options) -> dict:
    """:func:`~promptaudit.attribution.attribute_prompt` in float32, sharded when launched so.

    With a plain :class:`PromptedModel` this is ``attribute_prompt(prompted, texts,
    **options)`` on :func:`float32_model` (the same call when the model is
    float32). With a :class:`ShardedPromptedModel` the batches are dealt to the
    processes (:func:`attribution_shards`), attributed there in float32
    (:func:`attribute_batches`) and merged here (:func:`merge_attributions`);
    the result equals the single-process one.

    Parameters
    ----------
    prompted : PromptedModel or ShardedPromptedModel
    texts : sequence of str
    **options
        ``attribute_prompt``'s keyword options.

    Returns
    -------
    dict
        The ``attribution`` object of the result contract.
    """
    if not isinstance(prompted, ShardedPromptedModel):
        from promptaudit.attribution import attribute_prompt

        with float32_model(prompted) as model:
            return attribute_prompt(model, texts, **options)
    return prompted.attribute(texts, **options)


# ------------------------------------------------------------- the processes
@dataclass
class _Reply:
    ok: bool
    value: Any = None
    error_type: str = ""
    error_message: str = ""


def _error_reply(exc: BaseException) -> _Reply:
    text = str(exc).strip()
    message = text.splitlines()[0] if text else type(exc).__name__
    return _Reply(False, error_type=type(exc).__name__, error_message=message)


def _timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV)
    if value is None:
        return float(DEFAULT_TIMEOUT_S)
    try:
        seconds = float(value)
    except ValueError:
        raise InputError(f"{TIMEOUT_ENV} {value!r}: expected seconds, e.g. 7200") from None
    if seconds <= 0:
        raise InputError(f"{TIMEOUT_ENV} {value!r}: expected a positive number of seconds")
    return seconds


def launch_processes(*, device: str = "auto") -> AuditProcesses | None:
    """Join the processes a launcher started, or ``None`` for a single process.

    Without a launcher (or with one process) nothing is imported or initialised.
    Otherwise :class:`accelerate.PartialState` sets up the process group (NCCL
    when the processes have GPUs and ``device`` is not ``cpu``, else gloo) and
    a gloo group for the control messages and gathered results.

    Parameters
    ----------
    device : str
        The spec's ``model.device``; ``cpu`` keeps GPU machines on gloo and CPUs.
    """
    if launched_num_processes() <= 1:
        return None
    import torch.distributed as dist
    from accelerate import PartialState

    cpu = device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes != launched_num_processes():
        raise RuntimeError(f"the launcher started {launched_num_processes()} processes but "
                           f"Accelerate joined {state.num_processes}")
    group = dist.new_group(backend="gloo", timeout=_dt.timedelta(seconds=_timeout_seconds()))
    processes = AuditProcesses(
        rank=state.process_index, num_processes=state.num_processes,
        accelerator_device=state.device, group=group,
    )
    logger.info("process %d of %d on %s", processes.rank, processes.num_processes,
                processes.accelerator_device)
    return processes


class AuditProcesses:
    """The processes of one audit: the main process drives, the others serve shards.

    Parameters
    ----------
    rank : int
        This process's index (0 is the main process).
    num_processes : int
    accelerator_device : torch.device
        This process's device (``PartialState().device``).
    group : torch.distributed.ProcessGroup
        A gloo group of all processes for pickled objects.
    """

    def __init__(self, *, rank: int, num_processes: int, accelerator_device, group) -> None:
        self.rank = int(rank)
        self.num_processes = int(num_processes)
        self.accelerator_device = torch.device(accelerator_device)
        self._group = group
        self._base: PromptedModel | None = None
        self._soft = None
        self._loaded = None
        self._closed = False
        self._handlers: dict[str, Callable[[Any], Any]] = {
            "load": self._handle_load,
            "predict": self._handle_predict,
            "attribute": self._handle_attribute,
        }

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_for(self, requested: str) -> str:
        """This process's device for the spec's ``model.device`` (:func:`process_device`)."""
        return process_device(requested, self.accelerator_device)

    # ---------------------------------------------------------- main process
    def load_prompted_model(self, model: str, prompt: str | None, **options):
        """:func:`~promptaudit.prompted.load_prompted_model` on every process.

        Each process loads onto its own device (``options["device"]`` is mapped by
        :meth:`device_for`). Main process only.

        Returns
        -------
        (ShardedPromptedModel, SoftPrompt or None, LoadedModel)
        """
        self._request("load", [((model, prompt), dict(options))] * self.num_processes)
        base = self._base
        sharded = ShardedPromptedModel(
            base.model, base.tokenizer, base.prompt, task=base.task, labels=base.labels,
            max_length=base.max_length, batch_size=base.batch_size, processes=self,
        )
        return sharded, self._soft, self._loaded

    def close(self, exit_code: int = 0) -> None:
        """Main process: tell the others to exit with ``exit_code``; then leave the group."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.is_main:
                self._scatter([(_STOP, int(exit_code))] * self.num_processes)
        except Exception as exc:  # another process is gone; the launcher stops the rest
            logger.warning("could not tell the other processes to stop: %s", exc)
        finally:
            self._leave()

    def _request(self, op: str, payloads: Sequence[Any]) -> list[Any]:
        """Send ``payloads[r]`` to process ``r``, run ``payloads[0]`` here, gather the answers."""
        if not self.is_main:
            raise RuntimeError("only the main process sends requests")
        self._scatter([(op, payload) for payload in payloads])
        own_error: BaseException | None = None
        try:
            reply = _Reply(True, self._handlers[op](payloads[0]))
        except Exception as exc:  # gather first, so the other processes are not left waiting
            own_error, reply = exc, _error_reply(exc)
        replies = self._gather(reply)
        if own_error is not None:
            raise own_error
        for rank, answer in enumerate(replies):
            if not answer.ok:
                raise _rebuild_error(rank, answer)
        return [answer.value for answer in replies]

    # ------------------------------------------------------- other processes
    def serve(self) -> int:
        """Answer the main process's requests until it stops; its exit code is returned.

        Never writes files. Not for the main process.
        """
        if self.is_main:
            raise RuntimeError("the main process drives the audit; it does not serve")
        from promptaudit.pipeline import seed_everything

        seed_everything(0)  # deterministic kernels as on the main process; nothing random is drawn
        logging.getLogger("promptaudit").setLevel(logging.ERROR)
        try:
            while True:
                op, payload = self._receive()
                if op == _STOP:
                    return int(payload)
                handler = self._handlers.get(op)
                try:
                    if handler is None:
                        raise RuntimeError(f"unknown request {op!r}")
                    reply = _Reply(True, handler(payload))
                except Exception as exc:
                    reply = _error_reply(exc)
                self._gather(reply)
        finally:
            self._closed = True
            self._leave()

    # -------------------------------------------------------------- handlers
    def _handle_load(self, payload) -> None:
        from promptaudit.prompted import load_prompted_model

        (model, prompt), options = payload
        options = dict(options)
        options["device"] = self.device_for(options.get("device", "auto"))
        self._base, self._soft, self._loaded = load_prompted_model(model, prompt, **options)

    def _prompted(self, state: Mapping[str, Any]) -> PromptedModel:
        base = self._base
        if base is None:
            raise RuntimeError("no model was loaded on this process")
        return PromptedModel(base.model, base.tokenizer, state["prompt"], task=base.task,
                             labels=base.labels, max_length=state["max_length"],
                             batch_size=state["batch_size"])

    def _handle_predict(self, payload) -> np.ndarray:
        prompted = self._prompted(payload["model"])
        progress = payload["progress"] and self.is_main
        return prompted.predict_proba(payload["texts"], progress=progress)

    def _handle_attribute(self, payload) -> list[tuple[int, dict]]:
        prompted = self._prompted(payload["model"])
        return attribute_batches(prompted, payload["batches"], seed=payload["seed"],
                                 batch_size=payload["batch_size"],
                                 progress=payload["progress"] and self.is_main,
                                 **payload["options"])

    # --------------------------------------------------------- communication
    def _scatter(self, messages: list) -> None:
        import torch.distributed as dist

        dist.scatter_object_list([None], messages, src=0, group=self._group)

    def _receive(self):
        import torch.distributed as dist

        out = [None]
        dist.scatter_object_list(out, None, src=0, group=self._group)
        return out[0]

    def _gather(self, reply: _Reply) -> list[_Reply]:
        import torch.distributed as dist

        out = [None] * self.num_processes if self.is_main else None
        dist.gather_object(reply, out, dst=0, group=self._group)
        return out or []

    def _leave(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _rebuild_error(rank: int, reply: _Reply) -> Exception:
    message = f"process {rank}: {reply.error_message}"
    cls = getattr(_errors, reply.error_type, None)
    if isinstance(cls, type) and issubclass(cls, PromptAuditError):
        return cls(message)
    return RuntimeError(f"process {rank}: {reply.error_type}: {reply.error_message}")


class ShardedPromptedModel(PromptedModel):
    """A :class:`PromptedModel` whose predictions and attributions run on all processes.

    Lives on the main process. :meth:`predict_proba` deals the texts to the
    processes (:func:`prediction_shards`), each predicts its shard with its own
    copy of the model, and the rows come back in input order; the result equals
    ``PromptedModel.predict_proba``. Everything else (encoding, embeddings,
    :meth:`with_prompt`) is the local model's.

    Parameters
    ----------
    model, tokenizer, prompt, task, labels, max_length, batch_size
        As for :class:`PromptedModel`.
    processes : AuditProcesses
        The main process's handle on the process group.
    """

    def __init__(self, model, tokenizer, prompt, *, processes: AuditProcesses, **options) -> None:
        super().__init__(model, tokenizer, prompt, **options)
        self.processes = processes

    def with_prompt(self, prompt: torch.Tensor | None) -> ShardedPromptedModel:
        """The same model and settings with another prompt (or none), still sharded."""
        return ShardedPromptedModel(
            self.model, self.tokenizer, prompt, task=self.task, labels=self.labels,
            max_length=self.max_length + self.num_virtual_tokens, batch_size=self.batch_size,
            processes=self.processes,
        )

    def _state(self) -> dict:
        return {"prompt": None if self.prompt is None else self.prompt.detach().cpu(),
                "max_length": self.max_length, "batch_size": self.batch_size}

    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Label probabilities ``(n_texts, n_labels)`` (float64), computed by all processes."""
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if not texts:
            return out
        shards = prediction_shards(texts, batch_size=self.batch_size,
                                   num_processes=self.processes.num_processes)
        state = self._state()
        payloads = [{"model": state, "texts": [texts[i] for i in rows], "progress": progress}
                    for rows in shards]
        for rows, probs in zip(shards, self.processes._request("predict", payloads), strict=True):
            out[rows] = probs
        return out

    def attribute(self, texts: Sequence[str], *, max_examples: int = 200, seed: int = 0,
                  sensitive_features=None, progress: bool = False, **options) -> dict:
        """:func:`~promptaudit.attribution.attribute_prompt` over all processes (float32)."""
        from promptaudit.attribution import MAX_EXAMPLES_MESSAGE, NO_TEXTS_MESSAGE

        if (isinstance(max_examples, bool) or not isinstance(max_examples, numbers.Integral)
                or max_examples < 1):
            raise InputError(MAX_EXAMPLES_MESSAGE.format(value=max_examples))
        texts = [str(t) for t in texts]
        if not texts:
            raise InputError(NO_TEXTS_MESSAGE)
        groups = _sensitive_rows(sensitive_features, len(texts))
        texts = texts[:int(max_examples)]
        if groups is not None:
            groups = groups.iloc[: len(texts)].reset_index(drop=True)
        batch_size = _attribution_batch_size(options)
        options.pop("batch_size", None)
        lengths = self.encode(texts).attention_mask.sum(dim=1)
        shards = attribution_shards(lengths, batch_size=batch_size,
                                    num_processes=self.processes.num_processes)
        state = self._state()
        payloads = [{"model": state, "seed": int(seed), "batch_size": batch_size,
                     "progress": progress, "options": options,
                     "batches": [(index, [texts[i] for i in rows]) for index, rows in shard]}
                    for shard in shards]
        answers = self.processes._request("attribute", payloads)
        rows_of = {index: rows for shard in shards for index, rows in shard}
        pieces = [(rows_of[index], result) for answer in answers for index, result in answer]
        return merge_attributions(pieces, n_examples=len(texts), seed=int(seed),
                                  sensitive_features=groups,
                                  min_group_size=options.get("min_group_size"))
