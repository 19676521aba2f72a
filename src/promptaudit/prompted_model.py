"""PromptedModel: the one forward pass every stage of an audit uses.

``inputs_embeds = [prompt ; embed(input_ids)]`` with the attention mask extended
by ones and token types by zeros over the virtual tokens, exactly as PEFT's
prompt-learning forward does, so probabilities match ``PeftModel`` to float
precision. Label probabilities are read per task:

* ``sequence-classification``: softmax over the classifier logits;
* ``causal-lm``: softmax over the next-token logits of the label words (the
  verbalizer) at the last real input token;
* ``masked-lm``: softmax over the verbalizer logits at a ``[MASK]`` token that
  is appended to every input as a second segment (it is never truncated away).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from promptaudit.errors import InputError, ModelError, PromptError
from promptaudit.models import LoadedModel, Task, load_base_model
from promptaudit.settings import DEFAULT_MAX_LENGTH
from promptaudit.soft_prompts import (
    SoftPrompt,
    check_prompt_tensor,
    check_recorded_labels,
    load_prompt,
)

__all__ = [
    "PromptedModel",
    "EncodedBatch",
    "verbalizer_token_ids",
    "load_prompted_model",
    "apply_head_state",
    "predictions_frame",
    "float32_model",
]

logger = logging.getLogger(__name__)


@dataclass
class EncodedBatch:
    """Tokenized inputs for one batch.

    Attributes
    ----------
    input_ids : torch.LongTensor
        ``(batch, seq)``, right-padded.
    attention_mask : torch.LongTensor
        ``(batch, seq)``.
    token_type_ids : torch.LongTensor or None
        ``(batch, seq)`` where the model uses token types.
    readout_index : torch.LongTensor or None
        ``(batch,)`` position *within the input* whose logits hold the label
        (last real token for causal LMs, the mask token for masked LMs).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    readout_index: torch.Tensor | None

    def to(self, device: torch.device) -> EncodedBatch:
        fields = (self.input_ids, self.attention_mask, self.token_type_ids, self.readout_index)
        return EncodedBatch(*(None if t is None else t.to(device) for t in fields))


def verbalizer_token_ids(tokenizer, labels: Sequence[str]) -> list[int]:
    """First token id of each label word, as the model would see it mid-sentence.

    Label words are tokenized with a leading space (byte-level BPE tokenizers
    mark word starts that way; WordPiece ignores it). Two labels that share a
    first token cannot be told apart and are refused.
    """
    ids = []
    for label in labels:
        pieces = tokenizer.encode(" " + str(label), add_special_tokens=False)
        if not pieces:
            raise InputError(f"labels: label word {label!r} tokenizes to nothing")
        if len(pieces) > 1:
            logger.warning(
                "label word %r is %d tokens; its first token stands for it", label, len(pieces)
            )
        ids.append(int(pieces[0]))
    if len(set(ids)) != len(ids):
        raise InputError(
            f"labels: label words {list(labels)} share a first token; choose words that "
            "start with different tokens"
        )
    return ids


class PromptedModel:
    """A frozen model steered by a soft prompt.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        Task model in eval mode (frozen).
    tokenizer : transformers.PreTrainedTokenizerBase
        Right-padding tokenizer with a pad token.
    prompt : torch.Tensor or None
        ``(num_virtual_tokens, hidden)`` soft prompt; ``None`` runs the bare model
        (a baseline).
    task : Task
    labels : sequence of str
        Label names in index order; the verbalizer words for LM tasks.
    max_length : int
        Most input tokens per text (the prompt comes on top, within the
        model's position limit).
    batch_size : int
        Texts per forward pass in :meth:`predict_proba`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        prompt: torch.Tensor | None,
        *,
        task: Task | str,
        labels: Sequence[str],
        max_length: int = DEFAULT_MAX_LENGTH,
        batch_size: int = 32,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.task = Task.parse(task)
        self.labels = [str(label) for label in labels]
        if int(batch_size) < 1:
            raise InputError(f"batch_size: {batch_size}; must be >= 1")
        self.batch_size = int(batch_size)
        self.device = next(model.parameters()).device
        self.embedding_layer = model.get_input_embeddings()
        self.dtype = self.embedding_layer.weight.dtype
        self.prompt = None if prompt is None else prompt.detach().to(self.device, self.dtype)
        if self.prompt is not None and self.prompt.shape[-1] != self.hidden_size:
            raise ModelError(
                f"prompt hidden size {self.prompt.shape[-1]} does not match the model's "
                f"hidden size {self.hidden_size}"
            )
        max_positions = (
            getattr(model.config, "max_position_embeddings", None)
            or getattr(model.config, "n_positions", None)
            or 10**6
        )
        self.max_length = int(min(max_length, max_positions - self.num_virtual_tokens))
        if self.max_length < 4:
            raise InputError(
                f"max_length: {max_length} leaves fewer than 4 input tokens (the model has "
                f"{max_positions} positions, the prompt takes {self.num_virtual_tokens}); "
                "allowed: at least 4 input tokens"
            )
        self.uses_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])
        if self.task is Task.SEQUENCE_CLASSIFICATION:
            head_size = int(getattr(model.config, "num_labels", len(self.labels)))
            if head_size != len(self.labels):
                raise InputError(
                    f"labels: {len(self.labels)} labels given but the classifier head has "
                    f"{head_size} outputs"
                )
            self.label_token_ids = None
        else:
            self.label_token_ids = torch.tensor(
                verbalizer_token_ids(tokenizer, self.labels), device=self.device
            )
        if self.task is Task.MASKED_LM and tokenizer.mask_token is None:
            raise ModelError("task masked-lm: the tokenizer has no mask token")
        if getattr(tokenizer, "padding_side", "right") != "right":
            logger.debug("padding on the right (the tokenizer padded on the %s)",
                         tokenizer.padding_side)
            tokenizer.padding_side = "right"
        self._position_head = (
            position_scoring_head(model) if self.task is Task.SEQUENCE_CLASSIFICATION else None
        )

    # ------------------------------------------------------------------ shapes
    @property
    def num_virtual_tokens(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.embedding_layer.weight.shape[1])

    @property
    def word_embeddings(self) -> torch.Tensor:
        """``(vocab, hidden)`` input embedding matrix (no copy)."""
        return self.embedding_layer.weight

    def with_prompt(self, prompt: torch.Tensor | None) -> PromptedModel:
        """The same model and settings with another prompt (or none).

        The input is cut at the same :attr:`max_length` tokens, so every variant
        (soft prompt, projected hard prompt, init text, no prompt) reads exactly
        the same input tokens.
        """
        return PromptedModel(self.model, self.tokenizer, prompt, task=self.task,
                             labels=self.labels, max_length=self.max_length,
                             batch_size=self.batch_size)

    # ---------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Tokenize ``texts`` (right-padded, truncated to :attr:`max_length`)."""
        encoded = self._tokenize(
            [str(t) for t in texts],
            padding=True,
            truncation="only_first" if self.task is Task.MASKED_LM else True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        input_ids = encoded["input_ids"]
        attention_mask = encoded["attention_mask"]
        token_type_ids = encoded.get("token_type_ids") if self.uses_token_types else None
        readout = None
        if self.task is Task.CAUSAL_LM:
            readout = last_true_index(attention_mask)
        elif self.task is Task.MASKED_LM:
            # The mask promptaudit appends is the last one: a text may hold mask tokens too.
            is_mask = (input_ids == self.tokenizer.mask_token_id) & attention_mask.bool()
            readout = last_true_index(is_mask)
        return EncodedBatch(input_ids, attention_mask, token_type_ids, readout)

    def _tokenize(self, texts: list[str], **options):
        """The tokenizer on ``texts``; masked LMs get a ``[MASK]`` second segment each."""
        if self.task is Task.MASKED_LM:
            return self.tokenizer(texts, [self.tokenizer.mask_token] * len(texts), **options)
        return self.tokenizer(texts, **options)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``(batch, seq)`` ids -> ``(batch, seq, hidden)`` input embeddings."""
        return self.embedding_layer(input_ids.to(self.device))

    # ----------------------------------------------------------------- forward
    def label_logits(
        self,
        prompt_embeds: torch.Tensor | None,
        input_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        readout_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Differentiable forward from embeddings to label logits.

        Parameters
        ----------
        prompt_embeds : torch.Tensor or None
            ``(batch, num_virtual_tokens, hidden)`` or ``(num_virtual_tokens,
            hidden)`` (broadcast); ``None`` for no prompt.
        input_embeds : torch.Tensor
            ``(batch, seq, hidden)``.
        attention_mask : torch.Tensor
            ``(batch, seq)`` for the input part.
        token_type_ids : torch.Tensor, optional
            ``(batch, seq)``.
        readout_index : torch.Tensor, optional
            ``(batch,)`` input position of the label logits (LM tasks).

        Returns
        -------
        torch.Tensor
            ``(batch, n_labels)`` logits.
        """
        batch = input_embeds.shape[0]
        attention_mask = attention_mask.to(input_embeds.device)
        if prompt_embeds is not None:
            if prompt_embeds.ndim == 2:
                prompt_embeds = prompt_embeds.unsqueeze(0).expand(batch, -1, -1)
            n_virtual = prompt_embeds.shape[1]
            embeds = torch.cat([prompt_embeds.to(input_embeds.dtype), input_embeds], dim=1)
            prefix = attention_mask.new_ones(batch, n_virtual)
            mask = torch.cat([prefix, attention_mask], dim=1)
            if token_type_ids is not None:
                token_type_ids = torch.cat(
                    [token_type_ids.new_zeros(batch, n_virtual), token_type_ids.to(mask.device)],
                    dim=1,
                )
        else:
            n_virtual = 0
            embeds, mask = input_embeds, attention_mask
        kwargs = {"inputs_embeds": embeds, "attention_mask": mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.task is Task.SEQUENCE_CLASSIFICATION:
            return last_token_classifier_logits(
                lambda: self.model(**kwargs), self._position_head, mask
            )
        logits = self.model(**kwargs).logits
        if readout_index is None:
            raise ValueError("readout_index is required for language-model tasks")
        rows = torch.arange(batch, device=logits.device)
        at_readout = logits[rows, readout_index.to(logits.device) + n_virtual]
        return at_readout[:, self.label_token_ids].float()

    def label_probabilities(self, *args, **kwargs) -> torch.Tensor:
        """Softmax of :meth:`label_logits`: ``(batch, n_labels)``."""
        return torch.softmax(self.label_logits(*args, **kwargs), dim=-1)

    def forward_batch(
        self, batch: EncodedBatch, prompt: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Label probabilities ``(batch, n_labels)`` of an encoded batch."""
        batch = batch.to(self.device)
        prompt = self.prompt if prompt is None else prompt
        return self.label_probabilities(prompt, self.embed(batch.input_ids), batch.attention_mask,
                                        batch.token_type_ids, batch.readout_index)

    # -------------------------------------------------------------- inference
    def predict_proba(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Label probabilities for each text.

        Texts are batched by length (less padding), then returned in input order.

        Returns
        -------
        numpy.ndarray
            ``(n_texts, n_labels)`` float64 probabilities.
        """
        texts = [str(t) for t in texts]
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if not texts:
            return out
        # Only (n,) int64 lengths and order beside the output: memory per row stays a few bytes.
        lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        order = np.argsort(lengths, kind="stable")
        del lengths
        starts = range(0, len(texts), self.batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="predict", unit="batch", leave=False)
        with torch.inference_mode():
            for start in starts:
                index = order[start : start + self.batch_size]
                probs = self.forward_batch(self.encode([texts[i] for i in index]))
                out[index] = probs.double().cpu().numpy()
        return out

    def count_truncated(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` exceed :attr:`max_length` tokens and get cut."""
        total = 0
        for start in range(0, len(texts), 256):
            ids = self._tokenize([str(t) for t in texts[start : start + 256]])["input_ids"]
            total += sum(len(x) > self.max_length for x in ids)
        return total


def last_true_index(mask: torch.Tensor) -> torch.Tensor:
    """``(batch,)`` index of the last nonzero entry of each row of a ``(batch, seq)`` mask.

    Rows without one give 0.
    """
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return (positions * (mask != 0)).argmax(dim=1)


def last_token_classifier_logits(
    forward, head: torch.nn.Module | None, mask: torch.Tensor
) -> torch.Tensor:
    """Run ``forward()`` and read a decoder classifier at the last position ``mask`` keeps.

    Decoder classifiers (GPT-2, Llama, Qwen, ...) score every position with their
    ``score`` layer and pool the last non-pad token, found from ``input_ids``; called
    with ``inputs_embeds`` they pool the final position, a pad token for every text
    shorter than the longest in its batch. The per-position scores are captured from
    the head and read where the mask ends, as one unpadded text would be read.

    Parameters
    ----------
    forward : callable
        No-argument call of the classifier; returns an output with ``.logits``.
    head : torch.nn.Module or None
        :func:`position_scoring_head` of the model; ``None`` returns the model's
        own pooled logits.
    mask : torch.Tensor
        ``(batch, total_seq)`` attention mask over everything the model sees
        (virtual tokens included).

    Returns
    -------
    torch.Tensor
        ``(batch, n_labels)`` float32 logits.
    """
    if head is None:
        return forward().logits.float()
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        pooled = forward().logits
    finally:
        handle.remove()
    scores = captured[-1] if captured else None
    if not isinstance(scores, torch.Tensor) or scores.ndim != 3 or scores.shape[1] != mask.shape[1]:
        return pooled.float()  # the head saw pooled features: nothing to re-pool
    rows = torch.arange(scores.shape[0], device=scores.device)
    return scores[rows, last_true_index(mask).to(scores.device)].float()


def position_scoring_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The ``score`` layer of a decoder classifier (applied to every position), else None.

    Encoder classifiers pool first and name their head ``classifier``.
    """
    head = getattr(model, "score", None)
    return head if isinstance(head, torch.nn.Module) else None


def _task_and_label_count(task: Task | str | None, labels: Sequence[str] | None,
                          soft: SoftPrompt | None) -> tuple[Task, int | None]:
    """The task (given, or the adapter's) and the head size (labels, or the adapter's head),
    checked against the adapter."""
    if task is None:
        if soft is None or soft.task is None:
            allowed = ", ".join(t.value for t in Task)
            raise InputError(f"task: not given and the prompt does not say; allowed: {allowed}")
        task = soft.task
    task = Task.parse(task)
    if soft is not None and soft.task is not None and soft.task is not task:
        raise InputError(
            f"task: {task.value!r} given but the adapter {soft.source} was trained for "
            f"{soft.task.value!r}"
        )
    num_labels = len(labels) if labels else None
    if task is Task.SEQUENCE_CLASSIFICATION and soft is not None and soft.head_state:
        head_rows = head_output_size(soft.head_state)
        if num_labels is not None and head_rows is not None and head_rows != num_labels:
            raise InputError(
                f"labels: {num_labels} labels given but the adapter's classifier head has "
                f"{head_rows} outputs"
            )
        num_labels = num_labels or head_rows
    if task is not Task.SEQUENCE_CLASSIFICATION and not labels:
        raise InputError(
            f"labels: task {task.value} needs label words (the verbalizer), "
            "e.g. --labels negative,positive"
        )
    return task, num_labels


def _apply_prompt_head(loaded: LoadedModel, soft: SoftPrompt | None, model: str, task: Task,
                       hidden: int, *, allow_untrained_head: bool) -> None:
    """Check the prompt tensor, load a ``SEQ_CLS`` adapter's head, and refuse (or, allowed,
    warn about) head weights that stay random; sets ``loaded.missing_head_keys``."""
    applied: set[str] = set()
    if soft is not None:
        check_prompt_tensor(soft.embeddings, source=soft.source, hidden_size=hidden)
        if task is Task.SEQUENCE_CLASSIFICATION:
            applied = apply_head_state(loaded.model, soft.head_state, source=soft.source)
    untrained = tuple(key for key in loaded.missing_head_keys if key not in applied)
    loaded.missing_head_keys = untrained
    if untrained:
        message = untrained_head_message(model, task, untrained, soft)
        if not allow_untrained_head:
            raise ModelError(message)
        logger.warning("%s; used anyway (allow_untrained_head): its predictions come from "
                       "random weights", message.split("; provide")[0])


def load_prompted_model(
    model: str,
    prompt: str | None,
    *,
    task: Task | str | None = None,
    labels: Sequence[str] | None = None,
    device: str = "auto",
    dtype: str = "float32",
    max_length: int = DEFAULT_MAX_LENGTH,
    batch_size: int = 32,
    trust_remote_code: bool = False,
    allow_untrained_head: bool = False,
) -> tuple[PromptedModel, SoftPrompt | None, LoadedModel]:
    """Load a base model and a soft prompt and wire them into a :class:`PromptedModel`.

    The task comes from ``task`` or else the adapter's ``task_type``; ``model``
    overrides the adapter's base model (with a warning). A ``SEQ_CLS`` adapter's
    trained head is loaded into the model. Labels default to the head's names for
    classification and are required for LM tasks. A task head left random (in
    neither checkpoint nor adapter) is a :class:`ModelError` unless
    ``allow_untrained_head`` (then ``loaded.missing_head_keys`` names it).

    Returns
    -------
    (PromptedModel, SoftPrompt or None, LoadedModel)
    """
    soft = load_prompt(prompt) if prompt is not None else None
    check_recorded_labels(labels, soft)
    if not labels and soft is not None and soft.labels:
        labels = soft.labels
    task, num_labels = _task_and_label_count(task, labels, soft)
    loaded = load_base_model(model, task=task, num_labels=num_labels, device=device,
                             dtype=dtype, trust_remote_code=trust_remote_code)
    hidden = int(loaded.model.get_input_embeddings().weight.shape[1])
    if soft is not None and soft.base_model and soft.base_model not in (model, loaded.resolved):
        logger.warning("prompt %s was trained on base model %s; auditing it on %s as asked",
                       soft.source, soft.base_model, model)
    _apply_prompt_head(loaded, soft, model, task, hidden,
                       allow_untrained_head=allow_untrained_head)
    if not labels:
        id2label = getattr(loaded.model.config, "id2label", None) or {}
        labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(loaded.model.config.num_labels)]
    prompted = PromptedModel(loaded.model, loaded.tokenizer,
                             None if soft is None else soft.embeddings, task=task,
                             labels=labels, max_length=max_length, batch_size=batch_size)
    return prompted, soft, loaded


def untrained_head_message(
    reference: str, task: Task, keys: Sequence[str], soft: SoftPrompt | None
) -> str:
    """One line: which head weights are random and how to provide trained ones."""
    shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
    if task is Task.SEQUENCE_CLASSIFICATION:
        where = (f"the prompt {soft.source} carries no classifier head"
                 if soft is not None else "no prompt adapter supplies it")
        fix = ("a PEFT SEQ_CLS prompt adapter (it saves the trained head in modules_to_save) "
               "or a model saved with a trained classifier head")
    else:
        where = "the checkpoint lacks the language-model head"
        fix = "a model whose checkpoint holds its language-model head"
    return (
        f"model {reference!r}: the {task.value} head is untrained ({shown} not in the "
        f"checkpoint, initialised at random; {where}); provide {fix}, or allow it with "
        "--allow-untrained-head (spec: model.allow_untrained_head: true)"
    )


def head_output_size(head_state: dict[str, torch.Tensor]) -> int | None:
    """Number of outputs of a saved classifier head (rows of its last weight)."""
    weights = [k for k in head_state if k.endswith("weight") and head_state[k].ndim == 2]
    if not weights:
        return None
    return int(head_state[sorted(weights)[-1]].shape[0])


def apply_head_state(
    model: torch.nn.Module, head_state: dict[str, torch.Tensor], *, source: str
) -> set[str]:
    """Copy an adapter's trained classifier head (``modules_to_save``) into ``model``.

    Returns
    -------
    set of str
        The model's state-dict keys that were set.
    """
    if not head_state:
        logger.info("prompt %s carries no classifier head; the base model's head is used", source)
        return set()
    own = model.state_dict()
    update = {}
    for key, value in head_state.items():
        target = key if key in own else key.removeprefix("model.")
        if target not in own:
            raise PromptError(
                f"{source}: adapter weight {key!r} has no counterpart in the base model"
            )
        if tuple(own[target].shape) != tuple(value.shape):
            raise PromptError(
                f"{source}: adapter weight {key!r} has shape {tuple(value.shape)}; the model's "
                f"is {tuple(own[target].shape)}"
            )
        update[target] = value.to(own[target].dtype)
    model.load_state_dict(update, strict=False)
    return set(update)


def predictions_frame(
    texts: Sequence[str], probs: np.ndarray, labels: Sequence[str], *, text_column: str = "text"
):
    """One row per input: the text, ``p_<label>`` for every label, and ``prediction``.

    Parameters
    ----------
    texts : sequence of str
        ``(n,)``.
    probs : numpy.ndarray
        ``(n, n_labels)``.
    """
    import pandas as pd

    table = pd.DataFrame({text_column: list(texts)})
    for index, label in enumerate(labels):
        table[f"p_{label}"] = probs[:, index]
    table["prediction"] = [labels[i] for i in probs.argmax(axis=1)]
    return table


# ----------------------------------------------------------------- precision
def _floating_tensors(model: torch.nn.Module):
    seen: set[int] = set()
    for module in model.modules():
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None and tensor.is_floating_point() and id(tensor) not in seen:
                seen.add(id(tensor))
                yield tensor


@contextlib.contextmanager
def float32_model(prompted: PromptedModel) -> Iterator[PromptedModel]:
    """The prompted model computing in float32, for attribution.

    Integrated gradients in half precision do not converge, so attribution runs in
    float32. A half-precision model is upcast in place (parameters and buffers; tied
    weights stay tied) and restored on exit; half-precision values are exact in
    float32, so the round trip leaves the model bit for bit as it was.

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
        yield prompted.with_prompt(
            None if prompted.prompt is None else prompted.prompt.to(torch.float32)
        )
    finally:
        for tensor, dtype in restore:
            tensor.data = tensor.data.to(dtype)

