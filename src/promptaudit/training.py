"""Train a soft prompt with PEFT prompt tuning and save a PEFT adapter.

The model is wrapped with ``peft.get_peft_model`` and a ``PromptTuningConfig``;
only the prompt (and, for sequence classification, PEFT's trainable copy of the
classifier head in ``modules_to_save``) is optimised. The saved directory is a
plain PEFT adapter: ``PeftModel.from_pretrained`` loads it.

Training is deterministic for a seed (shuffle order per epoch comes from
``seed + epoch``), writes a checkpoint after every epoch into
``<out>/.checkpoints/``, and ``resume=True`` continues from the last one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from promptaudit.atomic import _umask
from promptaudit.choices import InitMethod, default_init_text  # torch-free choices
from promptaudit.errors import InputError
from promptaudit.models import LoadedModel, Task, load_base_model
from promptaudit.prompted_model import verbalizer_token_ids
from promptaudit.settings import TrainingConfig
from promptaudit.soft_prompts import text_init_token_ids

__all__ = [
    "InitMethod",
    "TrainingConfig",
    "TrainingResult",
    "train_prompt",
    "train_from_table",
    "default_init_text",
    "CHECKPOINT_DIR",
]

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = ".checkpoints"
#: Fewer held-out examples than this make the per-epoch validation accuracy a warning.
MIN_VALIDATION_EXAMPLES = 30
_TASK_TYPES = {Task.SEQUENCE_CLASSIFICATION: "SEQ_CLS", Task.CAUSAL_LM: "CAUSAL_LM"}


@dataclass
class TrainingResult:
    """What a training run produced.

    Attributes
    ----------
    adapter_dir : Path
    history : list of dict
        One entry per epoch: ``epoch``, ``train_loss``, ``val_accuracy`` (None
        without validation data), ``seconds``.
    init_tokens : list of str
        The tokens PEFT's text init copied into the virtual tokens, in order.
    init_special_tokens : list of str
        Special tokens ([CLS], [SEP], BOS, ...) among them: they are part of
        the starting prompt and are reported, not hidden.
    n_train, n_validation : int
    train_examples_per_second : float
    """

    adapter_dir: Path
    history: list[dict] = field(default_factory=list)
    init_tokens: list[str] = field(default_factory=list)
    init_special_tokens: list[str] = field(default_factory=list)
    n_train: int = 0
    n_validation: int = 0
    train_examples_per_second: float = 0.0


def train_from_table(model: str, data: str, *, text_column: str, label_column: str,
                     out_dir: str | Path, config: TrainingConfig,
                     labels: Sequence[str] | None = None, limit: int | None = None,
                     validation_data: str | None = None, **train_options) -> TrainingResult:
    """Train a soft prompt on a data table: what ``promptaudit train`` and a spec's
    ``prompt.train`` both run.

    Parameters
    ----------
    model : str
        Base model reference.
    data : str
        Table (file, ``builtin:``, ``hf:``) read with :func:`promptaudit.data.load_table`
        (seeded by ``config.seed``).
    text_column, label_column : str
    out_dir : str or Path
    config : TrainingConfig
        ``init_text`` None with a text init: :func:`default_init_text` of the labels.
    labels : sequence of str, optional
        Label names in index order (default: inferred from the label column).
    limit : int, optional
        Train on the first ``limit`` rows only.
    validation_data : str, optional
        Held-out table with the same columns.
    **train_options
        ``task``, ``device``, ``resume``, ``progress`` of :func:`train_prompt`.

    Returns
    -------
    TrainingResult
    """
    frame, texts, label_ids, labels = labelled_table(
        data, text_column=text_column, label_column=label_column, labels=labels,
        seed=config.seed, limit=limit)
    validation = {}
    if validation_data is not None:
        _, val_texts, val_ids, _ = labelled_table(
            validation_data, text_column=text_column, label_column=label_column, labels=labels,
            seed=config.seed)
        validation = {"validation_texts": val_texts, "validation_label_ids": val_ids}
    return train_prompt(model, texts, label_ids, labels=labels, out_dir=out_dir, config=config,
                        **validation, **train_options)


def labelled_table(source: str, *, text_column: str, label_column: str,
                   labels: Sequence[str] | None = None, seed: int = 0, limit: int | None = None,
                   columns: Sequence[str] = ()) -> tuple:
    """A labelled table (:func:`promptaudit.data.load_table`, its first ``limit`` rows).

    Returns
    -------
    tuple
        The frame, its ``(n,)`` texts, ``(n,)`` int64 label ids, and the label names
        (``labels``, or inferred from the label column).
    """
    from promptaudit.data import encode_labels, infer_labels, load_table

    frame = load_table(source, required_columns=[text_column, label_column, *columns],
                       seed=seed)
    if limit is not None:
        frame = frame.iloc[:limit].reset_index(drop=True)
    labels = list(labels or infer_labels(frame[label_column], source=source,
                                         column=label_column))
    label_ids = encode_labels(frame[label_column], labels, source=source, column=label_column)
    return frame, frame[text_column].astype(str).tolist(), label_ids, labels


def train_prompt(
    model: str,
    texts: Sequence[str],
    label_ids: Sequence[int],
    *,
    labels: Sequence[str],
    out_dir: str | Path,
    task: Task | str = Task.SEQUENCE_CLASSIFICATION,
    config: TrainingConfig | None = None,
    validation_texts: Sequence[str] | None = None,
    validation_label_ids: Sequence[int] | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    loaded: LoadedModel | None = None,
    initial_state: dict[str, torch.Tensor] | None = None,
    extra_loss: ExtraLoss | None = None,
    extra_info: dict | None = None,
) -> TrainingResult:
    """Train a soft prompt and save it as a PEFT adapter in ``out_dir``.

    Parameters
    ----------
    model : str
        Base model reference (Hub id, directory, ``builtin:minilm``).
    texts : sequence of str
        ``(n,)`` training texts.
    label_ids : sequence of int
        ``(n,)`` indices into ``labels``.
    labels : sequence of str
        Label names (verbalizer words for ``causal-lm``).
    out_dir : str or Path
        Where the adapter is written (atomically: a crash leaves the old one).
    task : {"sequence-classification", "causal-lm"}
    config : TrainingConfig
        ``init_text`` None with a text init: :func:`default_init_text` of ``labels``.
    validation_texts, validation_label_ids : optional
        Held-out data for per-epoch accuracy; without them a seeded
        ``config.validation_fraction`` of the training data is held out.
    resume : bool
        Continue from the last checkpoint in ``out_dir/.checkpoints``.
    loaded : LoadedModel, optional
        An already loaded base model to reuse (tests, benchmarks).
    initial_state : dict of str to Tensor, optional
        Warm start: a PEFT adapter state dict (``prompt_embeddings`` and, for
        ``SEQ_CLS``, the head keyed ``base_model.classifier.weight`` ...) loaded
        into the fresh ``PromptTuningConfig`` model before the first epoch (PEFT
        cannot load a prompt adapter as trainable). ``config.num_virtual_tokens``
        must match the state's prompt length.
    extra_loss : callable, optional
        ``extra_loss(logits_of, batch_texts, batch_logits) -> Tensor`` added to
        the task loss of every batch: ``logits_of(texts)`` gives ``(k, n_labels)``
        label logits of other texts with gradients, ``batch_logits`` is the
        batch's ``(b, n_labels)`` (see :mod:`promptaudit.mitigation`).
    extra_info : dict, optional
        Extra keys written into ``training_info.json`` (e.g. the mitigation record).

    Returns
    -------
    TrainingResult
    """
    config = _with_init_text(config or TrainingConfig(), labels)
    task, texts, label_ids = _checked_inputs(task, texts, label_ids)
    if validation_texts is None and config.validation_fraction > 0 and len(texts) >= 10:
        texts, label_ids, validation_texts, validation_label_ids = _hold_out(
            texts, label_ids, config.validation_fraction, config.seed
        )
    tuner = _Tuner.build(model, task, labels, config, device=device, loaded=loaded)
    result = tuner.new_result(Path(out_dir), len(texts), validation_texts)
    if initial_state is not None:
        _load_initial_state(tuner.peft_model, initial_state, config.num_virtual_tokens)
    tuner.make_optimizer()
    start_epoch = tuner.resume(result.adapter_dir / CHECKPOINT_DIR, result) if resume else 0
    _train_epochs(tuner, texts, label_ids, (validation_texts, validation_label_ids), result,
                  first=start_epoch, extra_loss=extra_loss, progress=progress)
    tuner.peft_model.eval()
    info = {"config": _config_dict(config), "labels": list(labels), "task": task.value,
            "base_model": model, **_result_info(result), **(extra_info or {})}
    _save_adapter_atomically(tuner.peft_model, Path(out_dir), training_info=info)
    return result


def _with_init_text(config: TrainingConfig, labels: Sequence[str]) -> TrainingConfig:
    """``config`` with :func:`default_init_text` of ``labels`` where a text init has none."""
    if config.init is InitMethod.TEXT and not config.init_text:
        return config.model_copy(update={"init_text": default_init_text(labels)})
    return config


def _result_info(result: TrainingResult) -> dict:
    """The keys of ``training_info.json`` that the run produced."""
    return {"history": result.history, "init_tokens": result.init_tokens,
            "init_special_tokens": result.init_special_tokens, "n_train": result.n_train,
            "n_validation": result.n_validation}


def _train_epochs(tuner: _Tuner, texts: list[str], label_ids: np.ndarray, validation: tuple,
                  result: TrainingResult, *, first: int, extra_loss: ExtraLoss | None,
                  progress: bool) -> None:
    """Epochs ``first`` to ``config.epochs``: history, a checkpoint after each, the speed."""
    config, checkpoints = tuner.config, result.adapter_dir / CHECKPOINT_DIR
    examples_seen, train_seconds = 0, 0.0
    for epoch in range(first, config.epochs):
        entry = tuner.epoch(epoch, texts, label_ids, extra_loss=extra_loss, progress=progress)
        examples_seen += len(texts)
        train_seconds += entry["seconds"]
        if validation[0] is not None and len(validation[0]):
            entry["val_accuracy"] = tuner.accuracy(*validation)
        result.history.append(entry)
        logger.info("epoch %d: loss %.4f, validation accuracy %s", epoch + 1,
                    entry["train_loss"], "n/a" if entry["val_accuracy"] is None
                    else f"{entry['val_accuracy']:.4f}")
        _write_checkpoint(checkpoints / f"epoch-{epoch + 1:04d}", tuner.peft_model,
                          tuner.optimizer, {"epoch": epoch + 1, "history": result.history,
                                            "config": _config_dict(config)})
    result.train_examples_per_second = examples_seen / train_seconds if train_seconds else 0.0


def _checked_inputs(task, texts, label_ids) -> tuple[Task, list[str], np.ndarray]:
    """The task, texts and ``(n,)`` int64 label ids, or a one-line :class:`InputError`."""
    task = Task.parse(task)
    if task not in _TASK_TYPES:
        raise InputError(
            f"task: training supports {', '.join(t.value for t in _TASK_TYPES)}; got {task.value}"
        )
    texts = [str(t) for t in texts]
    label_ids = np.asarray(label_ids, dtype=np.int64)
    if len(texts) == 0:
        raise InputError("data: no training examples")
    if len(texts) != len(label_ids):
        raise InputError(f"data: {len(texts)} texts but {len(label_ids)} labels")
    return task, texts, label_ids


@dataclass
class _Tuner:
    """A PEFT prompt-tuning model, its tokenizer and optimizer, and one epoch of training."""

    peft_model: torch.nn.Module
    tokenizer: object
    optimizer: torch.optim.Optimizer
    config: TrainingConfig
    device: torch.device
    batch_kwargs: dict

    @classmethod
    def build(cls, model: str, task: Task, labels: Sequence[str], config: TrainingConfig, *,
              device: str, loaded: LoadedModel | None) -> _Tuner:
        """Load the base model (seeded head) and wrap it in a seeded ``PromptTuningConfig``."""
        from peft import PromptTuningConfig, get_peft_model

        torch.manual_seed(config.seed)  # the classifier head's initial weights
        if loaded is None:
            loaded = load_base_model(model, task=task, num_labels=len(labels), device=device)
        loaded.model.requires_grad_(False)
        text_init = config.init is InitMethod.TEXT
        peft_config = PromptTuningConfig(
            task_type=_TASK_TYPES[task],
            num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init=config.init.peft_name,
            prompt_tuning_init_text=config.init_text if text_init else None,
            tokenizer_name_or_path=loaded.resolved if text_init else None,
        )
        torch.manual_seed(config.seed)  # random / sampled-vocabulary init
        peft_model = get_peft_model(loaded.model, peft_config)
        verbalizer = (
            None
            if task is Task.SEQUENCE_CLASSIFICATION
            else torch.tensor(verbalizer_token_ids(loaded.tokenizer, labels), device=loaded.device)
        )
        batch_kwargs = {"task": task, "verbalizer": verbalizer, "max_length": config.max_length,
                        "n_virtual": config.num_virtual_tokens}
        return cls(peft_model, loaded.tokenizer, None, config, loaded.device, batch_kwargs)

    def new_result(self, out_dir: Path, n_train: int, validation_texts) -> TrainingResult:
        """The result to fill, after the warnings on the init text and the validation size."""
        init_tokens, init_special = _describe_init(self.tokenizer, self.config)
        if init_special:
            logger.warning(
                "text init copies special tokens into the prompt: %s", ", ".join(init_special)
            )
        n_validation = 0 if validation_texts is None else len(validation_texts)
        if 0 < n_validation < MIN_VALIDATION_EXAMPLES:
            logger.warning(
                "the validation set has only %d example%s: its accuracy says little (give "
                "--validation-data or more training rows; %d or more held-out examples are "
                "advised)", n_validation, "" if n_validation == 1 else "s",
                MIN_VALIDATION_EXAMPLES,
            )
        return TrainingResult(adapter_dir=out_dir, init_tokens=init_tokens,
                              init_special_tokens=init_special, n_train=n_train,
                              n_validation=n_validation)

    def make_optimizer(self) -> None:
        """AdamW over the trainable parameters (the prompt and, for SEQ_CLS, the head)."""
        trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=self.config.learning_rate, weight_decay=0.0
        )

    def resume(self, checkpoints: Path, result: TrainingResult) -> int:
        """Load the last checkpoint into the model, optimizer and history; its epoch."""
        from peft import set_peft_model_state_dict

        last = _last_checkpoint(checkpoints)
        if last is None:
            raise InputError(
                f"{checkpoints}: --resume given but there is no checkpoint to resume from"
            )
        state = _read_checkpoint(last)
        saved = {k: v for k, v in (state["trainer"].get("config") or {}).items() if k != "epochs"}
        wanted = {k: v for k, v in _config_dict(self.config).items() if k != "epochs"}
        changed = sorted(k for k in wanted if k in saved and saved[k] != wanted[k])
        if changed:
            raise InputError(
                f"{last}: --resume with other settings than the checkpoint's ({changed[0]}: "
                f"{saved[changed[0]]!r} there, {wanted[changed[0]]!r} now); only epochs may change"
            )
        set_peft_model_state_dict(self.peft_model, state["adapter"])
        self.optimizer.load_state_dict(state["optimizer"])
        result.history = state["trainer"]["history"]
        logger.info("resuming from %s (epoch %d done)", last, state["trainer"]["epoch"])
        return state["trainer"]["epoch"]

    def logits(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), n_labels)`` label logits, with gradients."""
        return _label_logits(self.peft_model, self.tokenizer, list(texts), **self.batch_kwargs)

    def epoch(self, epoch: int, texts: list[str], label_ids: np.ndarray, *,
              extra_loss: ExtraLoss | None, progress: bool) -> dict:
        """One seeded pass over the data; the history entry (``val_accuracy`` None)."""
        started = time.perf_counter()
        self.peft_model.train()
        seed, batch_size = self.config.seed, self.config.batch_size
        torch.manual_seed(seed * 1000 + epoch)  # dropout masks
        order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(seed + epoch))
        batches = range(0, len(texts), batch_size)
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch")
        total_loss = 0.0
        for start in batches:
            index = order[start : start + batch_size].tolist()
            targets = torch.as_tensor(label_ids[index], device=self.device)
            batch_texts = [texts[i] for i in index]
            logits = self.logits(batch_texts)
            loss = torch.nn.functional.cross_entropy(logits, targets)
            if extra_loss is not None:
                loss = loss + extra_loss(self.logits, batch_texts, logits)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total_loss += float(loss.detach()) * len(index)
        return {"epoch": epoch + 1, "train_loss": total_loss / len(texts), "val_accuracy": None,
                "seconds": time.perf_counter() - started}

    def accuracy(self, texts, label_ids) -> float:
        """Accuracy on held-out texts (evaluation mode, no gradients)."""
        return _accuracy(self.peft_model, self.tokenizer, texts, label_ids,
                         batch_size=max(self.config.batch_size, 64), **self.batch_kwargs)


#: ``extra_loss(logits_of, batch_texts, batch_logits) -> scalar Tensor`` (see train_prompt).
ExtraLoss = Callable[
    [Callable[[Sequence[str]], torch.Tensor], list[str], torch.Tensor], torch.Tensor
]


# ----------------------------------------------------------------- helpers
def _load_initial_state(peft_model, state: dict[str, torch.Tensor], n_virtual: int) -> None:
    """Copy a saved adapter's weights into a freshly built prompt-tuning model (warm start)."""
    from peft import set_peft_model_state_dict

    prompt = state.get("prompt_embeddings")
    if prompt is None:
        raise InputError("initial prompt: no 'prompt_embeddings' tensor to start from")
    if int(prompt.shape[0]) != n_virtual:
        raise InputError(
            f"initial prompt: {int(prompt.shape[0])} virtual tokens but num_virtual_tokens is "
            f"{n_virtual}; they must match"
        )
    outcome = set_peft_model_state_dict(peft_model, dict(state))
    # The prompt lives on the prompt encoder, so the module load lists it as unexpected.
    unexpected = [
        k for k in getattr(outcome, "unexpected_keys", []) or [] if k != "prompt_embeddings"
    ]
    if unexpected:
        raise InputError(f"initial prompt: weights {unexpected[0]!r} do not fit this model")
    loaded = peft_model.get_prompt_embedding_to_save(peft_model.active_adapter)
    if not torch.equal(loaded.detach().cpu().float(), prompt.detach().cpu().float()):
        raise InputError("initial prompt: the prompt embeddings could not be loaded")
def _hold_out(texts, label_ids, fraction, seed):
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    n_val = max(1, int(round(len(texts) * fraction)))
    val, train = order[:n_val], np.sort(order[n_val:])
    return ([texts[i] for i in train], label_ids[train], [texts[i] for i in val], label_ids[val])


def _describe_init(tokenizer, config: TrainingConfig) -> tuple[list[str], list[str]]:
    if config.init is not InitMethod.TEXT:
        return [], []
    ids = text_init_token_ids(tokenizer, config.init_text, config.num_virtual_tokens)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special_ids = set(tokenizer.all_special_ids)
    special = sorted({tok for tok, i in zip(tokens, ids, strict=True) if i in special_ids})
    return tokens, special


def _encode(tokenizer, texts, max_length, device):
    encoded = tokenizer(
        texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
    )
    return {k: v.to(device) for k, v in encoded.items()}


def _label_logits(peft_model, tokenizer, texts, *, task, verbalizer, max_length, n_virtual):
    device = next(peft_model.parameters()).device
    encoded = _encode(tokenizer, texts, max_length, device)
    if task is Task.SEQUENCE_CLASSIFICATION:  # decoder classifiers: the last real token
        from promptaudit.prompted_model import last_token_classifier_logits, position_scoring_head

        mask = encoded["attention_mask"]
        full = torch.cat([mask.new_ones(mask.shape[0], n_virtual), mask], dim=1)
        head = position_scoring_head(peft_model.get_base_model())
        return last_token_classifier_logits(lambda: peft_model(**encoded), head, full)
    encoded.pop("token_type_ids", None)
    logits = peft_model(**encoded).logits
    last = encoded["attention_mask"].sum(dim=1) - 1 + n_virtual
    rows = torch.arange(len(texts), device=device)
    return logits[rows, last][:, verbalizer].float()


def _accuracy(peft_model, tokenizer, texts, label_ids, *, batch_size, **kwargs) -> float:
    peft_model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            chunk = [str(t) for t in texts[start : start + batch_size]]
            pred = (
                _label_logits(peft_model, tokenizer, chunk, **kwargs).argmax(dim=-1).cpu().numpy()
            )
            correct += int((pred == np.asarray(label_ids[start : start + batch_size])).sum())
    return correct / len(texts)


def _config_dict(config: TrainingConfig) -> dict:
    return config.model_dump(mode="json")


def _write_checkpoint(path: Path, peft_model, optimizer, trainer_state: dict) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=path.parent))
    adapter = {
        k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(peft_model).items()
    }
    save_file(adapter, str(tmp / "adapter.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, sort_keys=True, indent=2))
    if path.exists():
        shutil.rmtree(path)
    shutil.move(str(tmp), str(path))


def _last_checkpoint(checkpoints: Path) -> Path | None:
    if not checkpoints.is_dir():
        return None
    done = sorted(p for p in checkpoints.glob("epoch-*") if (p / "trainer_state.json").exists())
    return done[-1] if done else None


def _read_checkpoint(path: Path) -> dict:
    """Read a checkpoint; optimizer state is loaded with ``weights_only=True`` (never unpickled)."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return {
            "adapter": load_file(str(path / "adapter.safetensors")),
            "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
            "trainer": json.loads((path / "trainer_state.json").read_text(encoding="utf-8")),
        }
    except pickle.UnpicklingError:
        raise InputError(
            f"{path / 'optimizer.pt'}: refused: holds pickled objects that are not plain tensors "
            "(never unpickled); remove the checkpoint or train without --resume"
        ) from None
    except (SafetensorError, RuntimeError, EOFError, OSError, ValueError) as exc:
        raise InputError(
            f"{path}: checkpoint cannot be resumed from ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreadable'}); "
            "remove it to resume from an earlier one, or train without --resume"
        ) from None


def _save_adapter_atomically(peft_model, out_dir: Path, *, training_info: dict) -> None:
    """Save the adapter into a temporary folder beside ``out_dir``, then move each file in.

    Every file lands with an atomic ``os.replace``, so a crash leaves each
    file either old or new, never half-written; checkpoints stay where they are.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".adapter.tmp-", dir=out_dir))
    try:
        peft_model.save_pretrained(str(tmp))
        _tidy_adapter_config(tmp / "adapter_config.json", training_info["base_model"])
        (tmp / "training_info.json").write_text(json.dumps(training_info, sort_keys=True, indent=2))
        mode = 0o666 & ~_umask()  # save_pretrained may leave 0600: others must read it
        for item in tmp.iterdir():
            if item.is_file():
                item.chmod(mode)
            item.replace(out_dir / item.name)
        stale = out_dir / "adapter_model.bin"
        if stale.exists() and (out_dir / "adapter_model.safetensors").exists():
            stale.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _tidy_adapter_config(config_path: Path, model: str) -> None:
    """Make PEFT's ``adapter_config.json`` portable and free of repeats.

    * ``base_model_name_or_path``: PEFT writes the resolved directory; for a builtin
      model that path differs between machines, so ``builtin:minilm`` is recorded.
    * ``modules_to_save``: PEFT (0.21) lists the SEQ_CLS head modules twice
      (``["classifier", "score", "classifier", "score"]``); each is kept once, in order.
    """
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if model.startswith("builtin:"):
        config["base_model_name_or_path"] = model
    modules = config.get("modules_to_save")
    if isinstance(modules, list):
        config["modules_to_save"] = list(dict.fromkeys(modules))
    config_path.write_text(json.dumps(config, sort_keys=True, indent=2))
