"""Load soft prompts from PEFT adapters or tensor files, safely.

Supported sources
-----------------
* A PEFT adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``
  or ``adapter_model.bin``) for ``PROMPT_TUNING`` or ``P_TUNING``. Both save the
  input-space prompt as ``prompt_embeddings`` ``(num_virtual_tokens, hidden)``
  (P-tuning saves its encoder's output). ``SEQ_CLS`` adapters also carry the
  trained classifier head (``modules_to_save``), returned in ``head_state``.
* A ``.safetensors``, ``.pt`` or ``.bin`` file holding one
  ``(num_virtual_tokens, hidden)`` tensor (or a dict with exactly one tensor, or
  with ``prompt_embeddings``).
* A Hub id of an adapter (needs network).

Pickles are never executed: ``.pt``/``.bin`` files are read with
``torch.load(..., weights_only=True)`` and anything that is not plain tensors is
refused. Prefix tuning has no input-space tokens and is refused with a message
that says so.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from promptaudit.errors import PromptError
from promptaudit.models import PEFT_TASK_TYPES, Task

__all__ = [
    "SoftPrompt", "load_prompt", "check_prompt_tensor", "check_recorded_labels",
    "text_init_token_ids", "SUPPORTED_PEFT_TYPES", "PREFIX_TUNING_MESSAGE",
]

logger = logging.getLogger(__name__)

SUPPORTED_PEFT_TYPES = ("PROMPT_TUNING", "P_TUNING")
TENSOR_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")
PREFIX_TUNING_MESSAGE = (
    "{source}: PREFIX_TUNING adapters hold per-layer key/value prefixes, not input-space "
    "virtual tokens, so they cannot be projected onto words or attributed per position; "
    "allowed: PROMPT_TUNING or P_TUNING adapters"
)


@dataclass
class SoftPrompt:
    """A soft prompt and what is known about where it came from.

    Attributes
    ----------
    embeddings : torch.Tensor
        ``(num_virtual_tokens, hidden)`` float32 on CPU.
    source : str
        What the user passed (directory, file or Hub id).
    files : list of Path
        The files read, for provenance hashes.
    peft_type, task, base_model, init_method, init_text : str, Task or None
        From the adapter config (``task`` from its ``task_type``; ``init_text`` only for a
        ``TEXT`` init); None for tensor files.
    head_state : dict
        Classifier-head weights from ``modules_to_save`` keyed as in the base model.
    config : dict
        The raw adapter config (empty for tensor files).
    labels : list of str or None
        Label names recorded by ``promptaudit train`` (``training_info.json``).
    """

    embeddings: torch.Tensor
    source: str
    files: list[Path] = field(default_factory=list)
    peft_type: str | None = None
    task: Task | None = None
    base_model: str | None = None
    init_method: str | None = None
    init_text: str | None = None
    head_state: dict[str, torch.Tensor] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    labels: list[str] | None = None

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.embeddings.shape[1])


def load_prompt(reference: str | Path, *, hidden_size: int | None = None) -> SoftPrompt:
    """Load a soft prompt from an adapter directory, a tensor file or a Hub id.

    Parameters
    ----------
    reference : str or Path
        Adapter directory, ``.safetensors``/``.pt``/``.bin`` file, or Hub id.
    hidden_size : int, optional
        The base model's hidden size; a prompt of another width is refused.

    Returns
    -------
    SoftPrompt
    """
    source = str(reference)
    path = Path(source).expanduser()
    if path.is_dir():
        prompt = _load_adapter_dir(path, source)
    elif path.is_file():
        if path.suffix.lower() not in TENSOR_SUFFIXES:
            raise PromptError(
                f"{source}: unsupported prompt file type {path.suffix!r}; allowed: an adapter "
                f"directory or {', '.join(TENSOR_SUFFIXES)}"
            )
        prompt = SoftPrompt(
            embeddings=_single_tensor(_read_tensors(path), source), source=source, files=[path]
        )
    elif _looks_like_hub_id(source):
        prompt = _load_adapter_dir(_download_adapter(source), source)
    else:
        raise PromptError(
            f"{source}: prompt not found (expected an adapter directory or tensor file)"
        )
    check_prompt_tensor(prompt.embeddings, source=source, hidden_size=hidden_size)
    return prompt


def check_prompt_tensor(
    tensor: torch.Tensor, *, source: str, hidden_size: int | None = None
) -> None:
    """Refuse a prompt tensor of the wrong rank or width, or with NaN/inf values."""
    if tensor.ndim != 2:
        raise PromptError(
            f"{source}: prompt tensor has shape {tuple(tensor.shape)}; expected 2 dimensions "
            "[num_virtual_tokens, hidden]"
        )
    if tensor.shape[0] < 1:
        raise PromptError(f"{source}: prompt tensor has no virtual tokens")
    if not torch.is_floating_point(tensor):
        raise PromptError(
            f"{source}: prompt tensor has dtype {tensor.dtype}; expected floating point"
        )
    if hidden_size is not None and tensor.shape[1] != hidden_size:
        raise PromptError(
            f"{source}: prompt hidden size {tensor.shape[1]} does not match the model's "
            f"hidden size {hidden_size}"
        )
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        row = int((~finite).any(dim=1).nonzero()[0, 0])
        raise PromptError(
            f"{source}: prompt holds NaN or inf values (first at virtual token {row})"
        )


def check_recorded_labels(labels, soft: SoftPrompt | None) -> None:
    """Refuse labels that are not the ones, in the order, the adapter was trained with.

    ``promptaudit train`` records the labels in index order (``training_info.json``):
    label ``i`` is output ``i`` of the trained prompt. Labels given in another order
    would silently swap the outcomes (rejects counted as selected), and other names
    would mean another task; either is refused. Nothing is checked when no labels are
    given or the adapter records none.

    Raises
    ------
    PromptError
        ``labels: [accept, reject] given (model.labels / --labels) but the adapter ...
        was trained with [reject, accept] (index order) ...``.
    """
    if not labels or soft is None or not soft.labels:
        return
    given, recorded = [str(x) for x in labels], [str(x) for x in soft.labels]
    if given == recorded:
        return
    how = (
        "the same labels in another order: the outcomes would be swapped"
        if sorted(given) == sorted(recorded)
        else "other labels than the adapter's"
    )
    raise PromptError(
        f"labels: {given} given (model.labels / --labels) but the adapter {soft.source} was "
        f"trained with {recorded} (index order, training_info.json); {how}. Give "
        f"{recorded} in that order, or leave the labels out to use the adapter's"
    )


def text_init_token_ids(tokenizer, init_text: str, num_virtual_tokens: int) -> list[int]:
    """Token ids PEFT's ``TEXT`` init copies into each virtual token.

    Mirrors ``peft.tuners.prompt_tuning.PromptEmbedding``: the tokenizer's ids for
    the text *including special tokens* (``[CLS]``/``[SEP]``/BOS), truncated or
    repeated to ``num_virtual_tokens``.
    """
    ids = list(tokenizer(init_text)["input_ids"])
    if not ids:
        return []
    ids = ids * math.ceil(num_virtual_tokens / len(ids))
    return ids[:num_virtual_tokens]


def _load_adapter_dir(path: Path, source: str) -> SoftPrompt:
    config_path = path / "adapter_config.json"
    if not config_path.exists():
        raise PromptError(f"{source}: directory has no adapter_config.json (not a PEFT adapter)")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptError(f"{config_path}: not valid JSON ({exc})".splitlines()[0]) from None
    if not isinstance(config, dict):
        raise PromptError(f"{config_path}: expected a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type == "PREFIX_TUNING":
        raise PromptError(PREFIX_TUNING_MESSAGE.format(source=source))
    if peft_type not in SUPPORTED_PEFT_TYPES:
        raise PromptError(
            f"{config_path}: peft_type {config.get('peft_type')!r} is not a soft prompt; "
            f"allowed: {', '.join(SUPPORTED_PEFT_TYPES)}"
        )
    if config.get("num_transformer_submodules") not in (None, 1):
        raise PromptError(
            f"{config_path}: num_transformer_submodules={config['num_transformer_submodules']} "
            "(encoder-decoder prompts) is not supported; allowed: 1"
        )
    weights_path = _adapter_weights_file(path, source)
    tensors = _read_tensors(weights_path)
    if "prompt_embeddings" not in tensors:
        raise PromptError(f"{weights_path}: no 'prompt_embeddings' tensor in the adapter weights")
    _check_config_matches_weights(config, tensors["prompt_embeddings"], config_path, weights_path)
    head_state = {
        key.removeprefix("base_model."): value
        for key, value in tensors.items()
        if key != "prompt_embeddings"
    }
    task = PEFT_TASK_TYPES.get(str(config.get("task_type", "")).upper())
    init_method = config.get("prompt_tuning_init") if peft_type == "PROMPT_TUNING" else None
    init_text = config.get("prompt_tuning_init_text") if init_method == "TEXT" else None
    return SoftPrompt(
        embeddings=tensors["prompt_embeddings"].detach().to(torch.float32).cpu(),
        source=source,
        files=[config_path, weights_path],
        peft_type=peft_type,
        task=task,
        base_model=config.get("base_model_name_or_path"),
        init_method=str(init_method) if init_method else None,
        init_text=init_text,
        head_state=head_state,
        config=config,
        labels=_recorded_labels(path),
    )


def _check_config_matches_weights(
    config: dict, prompt: torch.Tensor, config_path: Path, weights_path: Path
) -> None:
    """Refuse an adapter whose config contradicts its ``prompt_embeddings`` tensor.

    ``num_virtual_tokens`` must equal the tensor's rows and ``token_dim`` its
    columns (where the config gives them): a contradiction means the config and
    the weights do not belong together, and either could be the wrong one.
    """
    if prompt.ndim != 2:
        return  # check_prompt_tensor refuses the shape with its own message
    for field_name, axis, what in (("num_virtual_tokens", 0, "rows"), ("token_dim", 1, "columns")):
        value = config.get(field_name)
        if value is None:
            continue
        actual = int(prompt.shape[axis])
        if isinstance(value, bool) or not isinstance(value, int) or value != actual:
            raise PromptError(
                f"{config_path}: {field_name} is {value!r} but prompt_embeddings in "
                f"{weights_path.name} has {actual} {what} (shape {tuple(prompt.shape)}); "
                "the config and the weights do not belong together"
            )


def _recorded_labels(path: Path) -> list[str] | None:
    """Labels that ``promptaudit train`` wrote beside the adapter, if any."""
    info = path / "training_info.json"
    if not info.exists():
        return None
    try:
        labels = json.loads(info.read_text(encoding="utf-8")).get("labels")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if isinstance(labels, list) and all(isinstance(x, str) for x in labels) and len(labels) >= 2:
        return labels
    return None


def _adapter_weights_file(path: Path, source: str) -> Path:
    for name in ("adapter_model.safetensors", "adapter_model.bin"):
        if (path / name).exists():
            return path / name
    raise PromptError(
        f"{source}: adapter has no weights file; "
        "expected adapter_model.safetensors or adapter_model.bin"
    )


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a tensor file without ever unpickling arbitrary objects."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise PromptError(
                f"{path}: not a valid safetensors file ({exc})".splitlines()[0]
            ) from None
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        raise PromptError(
            f"{path}: refused: the file is not plain tensors (weights_only load failed: "
            f"{type(exc).__name__}); save the prompt with safetensors or torch.save of a tensor"
        ) from None
    if isinstance(loaded, torch.Tensor):
        return {"prompt_embeddings": loaded}
    if isinstance(loaded, dict) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        return {str(k): v for k, v in loaded.items()}
    raise PromptError(f"{path}: holds a {type(loaded).__name__}, not a tensor or a dict of tensors")


def _single_tensor(tensors: dict[str, torch.Tensor], source: str) -> torch.Tensor:
    if "prompt_embeddings" in tensors:
        tensor = tensors["prompt_embeddings"]
    elif len(tensors) == 1:
        tensor = next(iter(tensors.values()))
    else:
        names = ", ".join(sorted(tensors)) or "none"
        raise PromptError(
            f"{source}: holds {len(tensors)} tensors ({names}); expected exactly one "
            "[num_virtual_tokens, hidden] tensor or one named 'prompt_embeddings'"
        )
    if not torch.is_floating_point(tensor):
        raise PromptError(
            f"{source}: prompt tensor has dtype {tensor.dtype}; expected floating point"
        )
    return tensor.detach().to(torch.float32).cpu()


def _looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~"))


def _download_adapter(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(repo_id, allow_patterns=["adapter_config.json", "adapter_model.*"])
        )
    except Exception as exc:  # network, auth, missing repo: all mean "cannot fetch"
        raise PromptError(
            f"{repo_id}: prompt not found locally and could not be fetched from the Hub "
            f"({type(exc).__name__})"
        ) from None
