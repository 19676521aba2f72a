"""Attribute a prompted model's output to prompt positions and input tokens (Captum).

Every method attributes over the concatenated embeddings ``[prompt ; input]``:
the prompt embeddings ``(batch, num_virtual_tokens, hidden)`` and the input
word embeddings ``(batch, seq, hidden)`` are handed to Captum as two input
tensors, so attributions come back per part.

Target function
---------------
The attributed output is the **softmax probability of the target label**,
``f(x) = softmax(label_logits(x))[target]``. The target is the predicted label
of each example unless the caller fixes one (an index or a label name). With
this single, bounded target function the attributions of every method are on
one scale (probability points) and satisfy completeness the way each method
promises:

* integrated gradients: ``sum(attributions) ≈ f(x) - f(baseline)``, with
  Captum's convergence delta (``sum - (f(x) - f(baseline))``) reported per
  example;
* Shapley value sampling: ``sum(attributions) = f(x) - f(baseline)`` exactly
  (efficiency holds for every sampled permutation);
* feature ablation: the attribution of a position is ``f(x) - f(x with that
  position replaced by the baseline)``; these do not sum to anything in
  general (no completeness).

Baselines
---------
``zero`` (the zero vector), ``pad`` (the pad-token embedding; EOS where a causal
LM has no pad token) and ``mean`` (the mean vocabulary embedding) are used at
*every* position, prompt positions included. Padding added to batch examples
of different lengths gets the input itself as its baseline, so its attribution
is exactly zero, it never changes ``f(baseline)``, and it is trimmed from the
results: each example reports only its real tokens. Special tokens ([CLS],
[SEP], the [MASK] a masked LM reads from) are input positions like any other:
attributed and listed in ``tokens``; only ``top_tokens`` skips them.

Per position, the attribution is the sum over the hidden dimension (integrated
gradients) or the value of the position's feature group (feature ablation,
Shapley sampling: Captum gives every hidden element of a group the group's
value).

Speed: texts are encoded once, ordered by length and attributed in batches of
``batch_size`` (padding kept short), with interpolation steps or perturbations
batched into the same forward pass (``internal_batch_size`` rows at most; by
default as many rows as fit a budget of 4096 token positions, which bounds memory
and keeps activations cache-sized);
predictions run under :func:`torch.inference_mode`; the Captum method and the
forward function are built once per call, not per example.
"""

from __future__ import annotations

import enum
import logging
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from promptaudit.errors import InputError
from promptaudit.prompted import EncodedBatch, PromptedModel

__all__ = [
    "AttributionMethod",
    "Baseline",
    "ShapleyInput",
    "BatchAttribution",
    "PromptAttribution",
    "PromptIntegratedGradients",
    "PromptFeatureAblation",
    "PromptShapleySampling",
    "attribute_prompt",
    "format_attribution_summary",
    "baseline_vector",
    "group_attribution",
    "UNKNOWN_METHOD_MESSAGE",
    "UNKNOWN_BASELINE_MESSAGE",
    "UNKNOWN_SHAPLEY_INPUT_MESSAGE",
    "N_STEPS_MESSAGE",
    "N_SAMPLES_MESSAGE",
    "MAX_EXAMPLES_MESSAGE",
    "BATCH_SIZE_MESSAGE",
    "INTERNAL_BATCH_SIZE_MESSAGE",
    "TARGET_RANGE_MESSAGE",
    "TARGET_LABEL_MESSAGE",
    "NO_TEXTS_MESSAGE",
    "NO_PROMPT_MESSAGE",
    "SENSITIVE_ROWS_MESSAGE",
]

logger = logging.getLogger(__name__)

# One-line error messages (``str.format`` templates); tests assert them exactly.
UNKNOWN_METHOD_MESSAGE = (
    "method: unknown attribution method {value!r}; allowed: "
    "integrated_gradients, feature_ablation, shapley_sampling"
)
UNKNOWN_BASELINE_MESSAGE = "baseline: unknown baseline {value!r}; allowed: zero, pad, mean"
UNKNOWN_SHAPLEY_INPUT_MESSAGE = "shapley_input: unknown grouping {value!r}; allowed: whole, tokens"
N_STEPS_MESSAGE = "n_steps: {value!r}; must be an integer >= 1"
N_SAMPLES_MESSAGE = "n_samples: {value!r}; must be an integer >= 1"
MAX_EXAMPLES_MESSAGE = "max_examples: {value!r}; must be an integer >= 1"
BATCH_SIZE_MESSAGE = "batch_size: {value!r}; must be an integer >= 1"
INTERNAL_BATCH_SIZE_MESSAGE = "internal_batch_size: {value!r}; must be an integer >= 1 or None"
TARGET_RANGE_MESSAGE = "target: label index {value!r} is out of range; allowed: 0 to {last}"
TARGET_LABEL_MESSAGE = "target: unknown label {value!r}; allowed: {allowed} or an index 0 to {last}"
NO_TEXTS_MESSAGE = "texts: no examples to attribute; give at least one text"
NO_PROMPT_MESSAGE = (
    "prompt: the model carries no soft prompt; attribution to prompt positions needs one"
)
SENSITIVE_ROWS_MESSAGE = (
    "sensitive_features: {rows} rows but {texts} texts; give one row per text, in order"
)

#: Token positions (rows x (num_virtual_tokens + seq)) per forward pass when
#: ``internal_batch_size`` is None (never fewer rows than the batch's examples).
DEFAULT_TOKENS_PER_PASS = 4096
#: A max |convergence delta| above this is logged as a warning (raise n_steps).
CONVERGENCE_WARNING = 0.05
#: Input tokens listed per example in ``top_tokens``.
TOP_TOKENS = 5
#: Virtual-token positions listed per feature in ``by_group[...]["top_positions"]``.
TOP_POSITIONS = 5
#: Group name of rows whose sensitive feature is missing.
MISSING_GROUP = "<missing>"


# ----------------------------------------------------------------- choices
class _Choice(enum.StrEnum):
    @classmethod
    def parse(cls, value):
        """Parse a name, raising a one-line :class:`InputError` on an unknown one."""
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            raise InputError(_CHOICE_MESSAGES[cls].format(value=value)) from None


class AttributionMethod(_Choice):
    """Attribution method (one Captum method, one class here)."""

    INTEGRATED_GRADIENTS = "integrated_gradients"
    FEATURE_ABLATION = "feature_ablation"
    SHAPLEY_SAMPLING = "shapley_sampling"



class Baseline(_Choice):
    """Reference embedding put at every prompt and input position."""

    ZERO = "zero"
    PAD = "pad"
    MEAN = "mean"



class ShapleyInput(_Choice):
    """How Shapley sampling groups the input: one player, or one player per token."""

    WHOLE = "whole"
    TOKENS = "tokens"


_CHOICE_MESSAGES = {
    AttributionMethod: UNKNOWN_METHOD_MESSAGE,
    Baseline: UNKNOWN_BASELINE_MESSAGE,
    ShapleyInput: UNKNOWN_SHAPLEY_INPUT_MESSAGE,
}


def baseline_vector(prompted: PromptedModel, baseline: Baseline | str) -> torch.Tensor:
    """The baseline embedding used at every position.

    Parameters
    ----------
    prompted : PromptedModel
    baseline : {"zero", "pad", "mean"}

    Returns
    -------
    torch.Tensor
        ``(hidden,)`` on the model's device, in the embedding dtype.
    """
    baseline = Baseline.parse(baseline)
    weights = prompted.word_embeddings.detach()
    if baseline is Baseline.ZERO:
        return torch.zeros_like(weights[0])
    if baseline is Baseline.PAD:
        return weights[int(prompted.tokenizer.pad_token_id)].clone()
    return weights.mean(dim=0)


# ------------------------------------------------------------------ methods
@dataclass
class BatchAttribution:
    """Attributions of one padded batch.

    Attributes
    ----------
    prompt : torch.Tensor
        ``(batch, num_virtual_tokens)`` attribution per virtual token.
    inputs : torch.Tensor or None
        ``(batch, seq)`` attribution per input token (exactly zero at padding);
        ``None`` when the input is one feature group (Shapley, ``whole``).
    input_total : torch.Tensor
        ``(batch,)`` attribution of the whole input (the sum of ``inputs``).
    delta : torch.Tensor or None
        ``(batch,)`` Captum's convergence delta (integrated gradients only).
    """

    prompt: torch.Tensor
    inputs: torch.Tensor | None
    input_total: torch.Tensor
    delta: torch.Tensor | None = None


class PromptAttribution:
    """Base class: the target function and baselines shared by all methods.

    Parameters
    ----------
    prompted : PromptedModel
        A model with a soft prompt.
    baseline : {"zero", "pad", "mean"}
    internal_batch_size : int, optional
        Most rows per forward pass; ``None`` picks as many as fit
        :data:`DEFAULT_TOKENS_PER_PASS` token positions.
    """

    method: ClassVar[AttributionMethod]

    def __init__(self, prompted: PromptedModel, *, baseline: Baseline | str = Baseline.PAD,
                 internal_batch_size: int | None = None):
        if prompted.prompt is None:
            raise InputError(NO_PROMPT_MESSAGE)
        self.prompted = prompted
        self.baseline = Baseline.parse(baseline)
        self.baseline_embedding = baseline_vector(prompted, self.baseline)
        self.internal_batch_size = internal_batch_size

    def rows_per_pass(self, examples: int, seq: int) -> int:
        """Rows per forward pass for a batch of ``examples`` inputs of ``seq`` tokens."""
        if self.internal_batch_size is not None:
            return int(self.internal_batch_size)
        positions = self.prompted.num_virtual_tokens + seq
        return max(examples, DEFAULT_TOKENS_PER_PASS // max(positions, 1))

    def forward(
        self,
        prompt_embeds: torch.Tensor,
        input_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None,
        readout_index: torch.Tensor | None,
    ) -> torch.Tensor:
        """Label probabilities ``(rows, n_labels)`` from ``(rows, n_virtual, hidden)``
        prompt and ``(rows, seq, hidden)`` input embeddings (Captum's forward)."""
        return self.prompted.label_probabilities(
            prompt_embeds, input_embeds, attention_mask, token_type_ids, readout_index
        )

    def prepare(self, batch: EncodedBatch) -> tuple[tuple, tuple, tuple]:
        """Inputs, baselines and additional forward args of a batch.

        Returns
        -------
        inputs : (torch.Tensor, torch.Tensor)
            ``(batch, n_virtual, hidden)`` prompt and ``(batch, seq, hidden)``
            input embeddings.
        baselines : (torch.Tensor, torch.Tensor)
            Same shapes; the baseline embedding everywhere except at padding,
            where the baseline is the input itself.
        additional : tuple
            ``(attention_mask, token_type_ids, readout_index)``.
        """
        prompted = self.prompted
        with torch.no_grad():
            input_embeds = prompted.embed(batch.input_ids).detach()
        rows = input_embeds.shape[0]
        prompt_embeds = prompted.prompt.unsqueeze(0).expand(rows, -1, -1).clone()
        prompt_base = self.baseline_embedding.expand_as(prompt_embeds).clone()
        real = batch.attention_mask.to(input_embeds.device).bool().unsqueeze(-1)
        fill = self.baseline_embedding.expand_as(input_embeds)
        input_base = torch.where(real, fill, input_embeds)
        additional = (batch.attention_mask, batch.token_type_ids, batch.readout_index)
        return (prompt_embeds, input_embeds), (prompt_base, input_base), additional

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        """Attribute the target-label probability of one encoded batch.

        Parameters
        ----------
        batch : EncodedBatch
            ``(batch, seq)`` right-padded inputs on the model's device.
        target : torch.Tensor
            ``(batch,)`` label index per example.

        Returns
        -------
        BatchAttribution
        """
        raise NotImplementedError


class PromptIntegratedGradients(PromptAttribution):
    """Integrated gradients (Captum ``IntegratedGradients``, Gauss-Legendre steps).

    Parameters
    ----------
    prompted : PromptedModel
    baseline : {"zero", "pad", "mean"}
    n_steps : int
        Interpolation steps.
    internal_batch_size : int, optional
        Most rows (examples x steps) per forward pass (Captum's
        ``internal_batch_size``); ``None`` picks as many as fit
        :data:`DEFAULT_TOKENS_PER_PASS` token positions.

    Examples
    --------
    >>> ig = PromptIntegratedGradients(prompted, baseline="pad", n_steps=32)  # doctest: +SKIP
    >>> out = ig.attribute(prompted.encode(["a fine film"]), torch.tensor([1]))  # doctest: +SKIP
    >>> out.prompt.shape, out.delta.shape  # doctest: +SKIP
    (torch.Size([1, 10]), torch.Size([1]))
    """

    method = AttributionMethod.INTEGRATED_GRADIENTS

    def __init__(self, prompted: PromptedModel, *, baseline: Baseline | str = Baseline.PAD,
                 n_steps: int = 32, internal_batch_size: int | None = None):
        from captum.attr import IntegratedGradients

        super().__init__(prompted, baseline=baseline, internal_batch_size=internal_batch_size)
        self.n_steps = int(n_steps)
        self._captum = IntegratedGradients(self.forward)

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        inputs, baselines, additional = self.prepare(batch)
        (prompt_attr, input_attr), delta = self._captum.attribute(
            inputs, baselines=baselines, target=target, additional_forward_args=additional,
            n_steps=self.n_steps,
            internal_batch_size=self.rows_per_pass(*inputs[1].shape[:2]),
            return_convergence_delta=True,
        )
        prompt = prompt_attr.detach().sum(dim=-1)
        tokens = input_attr.detach().sum(dim=-1)
        return BatchAttribution(prompt, tokens, tokens.sum(dim=-1), delta.detach().reshape(-1))


class _PerturbationAttribution(PromptAttribution):
    """Shared set-up of the feature-group (perturbation) methods."""

    def perturbations_per_eval(self, examples: int, seq: int) -> int:
        """Perturbed copies of an ``examples``-row batch per forward pass."""
        return max(1, self.rows_per_pass(examples, seq) // max(examples, 1))

    def feature_masks(self, seq: int, *, input_whole: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature groups: ``(1, n_virtual, 1)`` ids ``0..n_virtual-1`` for the prompt and
        ``(1, seq, 1)`` ids for the input (one id, or one per position)."""
        device = self.prompted.device
        n_virtual = self.prompted.num_virtual_tokens
        prompt_mask = torch.arange(n_virtual, device=device).view(1, n_virtual, 1)
        if input_whole:
            input_mask = torch.full((1, seq, 1), n_virtual, device=device)
        else:
            input_mask = (n_virtual + torch.arange(seq, device=device)).view(1, seq, 1)
        return prompt_mask, input_mask


class PromptFeatureAblation(_PerturbationAttribution):
    """Feature ablation (Captum ``FeatureAblation``): each virtual token and each input
    token replaced by the baseline embedding, one at a time.

    The attribution of a position is ``f(x) - f(x with that position set to the
    baseline)``.

    Parameters
    ----------
    prompted : PromptedModel
    baseline : {"zero", "pad", "mean"}
    internal_batch_size : int, optional
        Most rows per forward pass (sets Captum's ``perturbations_per_eval``).
    """

    method = AttributionMethod.FEATURE_ABLATION

    def __init__(self, prompted: PromptedModel, *, baseline: Baseline | str = Baseline.PAD,
                 internal_batch_size: int | None = None):
        from captum.attr import FeatureAblation

        super().__init__(prompted, baseline=baseline, internal_batch_size=internal_batch_size)
        self._captum = FeatureAblation(self.forward)

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        inputs, baselines, additional = self.prepare(batch)
        masks = self.feature_masks(inputs[1].shape[1], input_whole=False)
        with torch.inference_mode():
            prompt_attr, input_attr = self._captum.attribute(
                inputs, baselines=baselines, target=target, additional_forward_args=additional,
                feature_mask=masks,
                perturbations_per_eval=self.perturbations_per_eval(*inputs[1].shape[:2]),
            )
        # every hidden element of a group carries the group's value
        prompt = prompt_attr[..., 0].clone()
        tokens = input_attr[..., 0].clone()
        return BatchAttribution(prompt, tokens, tokens.sum(dim=-1))


class PromptShapleySampling(_PerturbationAttribution):
    """Shapley value sampling (Captum ``ShapleyValueSampling``) over prompt positions.

    Players are the virtual tokens plus the input: by default (``shapley_input=
    "whole"``) the whole input is one player, so the cost is ``n_samples *
    (num_virtual_tokens + 1)`` forward passes and no per-token values are
    reported; ``"tokens"`` makes every input token a player (per-token values,
    ``n_samples * (num_virtual_tokens + seq)`` passes). Efficiency holds per
    example: the attributions sum to ``f(x) - f(baseline)``.

    Parameters
    ----------
    prompted : PromptedModel
    baseline : {"zero", "pad", "mean"}
    n_samples : int
        Sampled permutations.
    shapley_input : {"whole", "tokens"}
    seed : int
        Permutations of batch ``i`` are drawn from ``torch.manual_seed(seed + i)``
        in a forked RNG (the global RNG is left as it was).
    internal_batch_size : int, optional
        Most rows per forward pass (sets Captum's ``perturbations_per_eval``).
    """

    method = AttributionMethod.SHAPLEY_SAMPLING

    def __init__(self, prompted: PromptedModel, *, baseline: Baseline | str = Baseline.PAD,
                 n_samples: int = 25, shapley_input: ShapleyInput | str = ShapleyInput.WHOLE,
                 seed: int = 0, internal_batch_size: int | None = None):
        from captum.attr import ShapleyValueSampling

        super().__init__(prompted, baseline=baseline, internal_batch_size=internal_batch_size)
        self.n_samples = int(n_samples)
        self.shapley_input = ShapleyInput.parse(shapley_input)
        self.seed = int(seed)
        self._batches = 0
        self._captum = ShapleyValueSampling(self.forward)

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        inputs, baselines, additional = self.prepare(batch)
        whole = self.shapley_input is ShapleyInput.WHOLE
        masks = self.feature_masks(inputs[1].shape[1], input_whole=whole)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(self.seed + self._batches)
            prompt_attr, input_attr = self._captum.attribute(
                inputs, baselines=baselines, target=target, additional_forward_args=additional,
                feature_mask=masks, n_samples=self.n_samples,
                perturbations_per_eval=self.perturbations_per_eval(*inputs[1].shape[:2]),
            )
        self._batches += 1
        prompt = prompt_attr[..., 0].clone()
        if whole:
            return BatchAttribution(prompt, None, input_attr[:, 0, 0].clone())
        tokens = input_attr[..., 0].clone()
        # padding is a player whose baseline is itself: exactly zero, but keep it clean
        tokens = tokens * batch.attention_mask.to(tokens.device, tokens.dtype)
        return BatchAttribution(prompt, tokens, tokens.sum(dim=-1))


# ---------------------------------------------------------------- entry point
def _check_int(value, message: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(message.format(value=value))


def _resolve_target(target, labels: Sequence[str]) -> int | None:
    """``None`` (predicted), a label index or a label name -> index or None."""
    if target is None:
        return None
    last = len(labels) - 1
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        if not 0 <= int(target) <= last:
            raise InputError(TARGET_RANGE_MESSAGE.format(value=int(target), last=last))
        return int(target)
    if isinstance(target, str) and target in labels:
        return labels.index(target)
    allowed = ", ".join(labels)
    raise InputError(TARGET_LABEL_MESSAGE.format(value=target, allowed=allowed, last=last))


def _sensitive_frame(sensitive_features, n_texts: int) -> pd.DataFrame | None:
    if sensitive_features is None:
        return None
    if isinstance(sensitive_features, pd.Series):
        frame = sensitive_features.to_frame(name=sensitive_features.name or "sensitive_feature")
    elif isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features
    elif isinstance(sensitive_features, Mapping):
        frame = pd.DataFrame(dict(sensitive_features))
    else:
        frame = pd.DataFrame(sensitive_features)
    if len(frame) != n_texts:
        raise InputError(SENSITIVE_ROWS_MESSAGE.format(rows=len(frame), texts=n_texts))
    return frame.reset_index(drop=True)


def _build_method(method: AttributionMethod, prompted: PromptedModel,
                  **options) -> PromptAttribution:
    if method is AttributionMethod.INTEGRATED_GRADIENTS:
        return PromptIntegratedGradients(
            prompted, baseline=options["baseline"], n_steps=options["n_steps"],
            internal_batch_size=options["internal_batch_size"],
        )
    if method is AttributionMethod.FEATURE_ABLATION:
        return PromptFeatureAblation(
            prompted, baseline=options["baseline"],
            internal_batch_size=options["internal_batch_size"],
        )
    return PromptShapleySampling(
        prompted, baseline=options["baseline"], n_samples=options["n_samples"],
        shapley_input=options["shapley_input"], seed=options["seed"],
        internal_batch_size=options["internal_batch_size"],
    )


def _slice_batch(encoded: EncodedBatch, index: torch.Tensor, length: int) -> EncodedBatch:
    def rows(t, trim=True):
        if t is None:
            return None
        t = t[index]
        return t[:, :length] if trim else t

    return EncodedBatch(
        rows(encoded.input_ids), rows(encoded.attention_mask), rows(encoded.token_type_ids),
        rows(encoded.readout_index, trim=False),
    )


def attribute_prompt(
    prompted: PromptedModel,
    texts: Sequence[str],
    *,
    method: AttributionMethod | str = AttributionMethod.INTEGRATED_GRADIENTS,
    n_steps: int = 32,
    baseline: Baseline | str = Baseline.PAD,
    target: int | str | None = None,
    max_examples: int = 200,
    batch_size: int = 8,
    internal_batch_size: int | None = None,
    n_samples: int = 25,
    sensitive_features: pd.DataFrame | pd.Series | Mapping | None = None,
    seed: int = 0,
    progress: bool = False,
    shapley_input: ShapleyInput | str = ShapleyInput.WHOLE,
) -> dict:
    """Attribute the target-label probability to prompt positions and input tokens.

    Parameters
    ----------
    prompted : PromptedModel
        A model with a soft prompt ``(num_virtual_tokens, hidden)``.
    texts : sequence of str
        ``(n_texts,)`` inputs; the first ``max_examples`` are attributed.
    method : {"integrated_gradients", "feature_ablation", "shapley_sampling"}
    n_steps : int
        Integrated-gradients interpolation steps.
    baseline : {"pad", "zero", "mean"}
        Reference embedding at every prompt and input position.
    target : int, str or None
        Label index or name to attribute; ``None`` attributes each example's
        predicted label.
    max_examples : int
        Attribute the first ``max_examples`` texts (in the order given; no
        sampling, so results are reproducible and line up with the data file).
    batch_size : int
        Examples per attribution batch (texts are ordered by length first).
    internal_batch_size : int, optional
        Most rows per forward pass: examples x interpolation steps for
        integrated gradients (Captum's ``internal_batch_size``), examples x
        perturbations for the perturbation methods (sets Captum's
        ``perturbations_per_eval``). ``None`` picks as many rows as fit 4096
        token positions. Trades memory for speed; results do not depend on it
        beyond float rounding.
    n_samples : int
        Shapley sampling permutations.
    sensitive_features : pandas.DataFrame, Series or mapping, optional
        ``(n_texts, n_features)``, one row per text in ``texts`` (all of them,
        before the ``max_examples`` cut); adds ``by_group``.
    seed : int
        Seed of Shapley permutations (every other method is deterministic).
    progress : bool
        Show a tqdm progress bar over batches.
    shapley_input : {"whole", "tokens"}
        Shapley sampling players for the input: the whole input as one player
        (default; no per-token values, ``token_attributions`` is None) or every
        token.

    Returns
    -------
    dict
        The result contract's ``attribution`` object (plain JSON-able values)::

            {"method", "n_steps", "n_samples", "baseline", "target_policy",
             "target_function": "probability", "seed", "labels",
             "num_virtual_tokens", "n_examples",
             "prompt_share", "per_position": [P], "per_position_abs": [P],
             "max_convergence_delta",
             "examples": [{"text", "target", "target_label", "target_probability",
                           "tokens": [T], "prompt_attributions": [P],
                           "token_attributions": [T] or None, "input_attribution",
                           "convergence_delta", "top_tokens": [{"token", "attribution"}]}],
             "by_group": {feature: {"groups": {g: [P]}, "counts": {g: n},
                                    "max_difference": [P], "top_positions": [...]}} or None}

        ``prompt_share`` is, per example, ``sum |prompt| / (sum |prompt| + sum
        |input|)`` (0 when both are 0), averaged over examples; ``per_position``
        and ``per_position_abs`` are the mean signed and absolute attribution
        per virtual token. ``top_tokens`` are the example's non-special tokens
        with the largest absolute attribution (at most 5). ``n_steps`` is None
        unless the method is integrated gradients, ``n_samples`` unless it is
        Shapley sampling; ``convergence_delta`` and ``max_convergence_delta``
        (largest absolute delta) are None except for integrated gradients.
        ``by_group[f]["groups"][g]`` is the mean attribution per virtual token
        over the examples of group ``g``; ``max_difference`` the max minus the
        min of those group means per position; ``top_positions`` the positions
        with the largest ``max_difference`` (at most 5, largest first).

    Raises
    ------
    InputError
        Unknown method, baseline or grouping; ``n_steps``, ``n_samples``,
        ``max_examples``, ``batch_size`` or ``internal_batch_size`` below 1; a
        target out of range or not a label; no texts; no prompt; sensitive
        features whose rows do not match the texts.

    Examples
    --------
    >>> result = attribute_prompt(prompted, ["a gripping film"], n_steps=16)  # doctest: +SKIP
    >>> result["prompt_share"], len(result["per_position"])  # doctest: +SKIP
    (0.41, 10)
    """
    method = AttributionMethod.parse(method)
    baseline = Baseline.parse(baseline)
    shapley_input = ShapleyInput.parse(shapley_input)
    _check_int(n_steps, N_STEPS_MESSAGE)
    _check_int(n_samples, N_SAMPLES_MESSAGE)
    _check_int(max_examples, MAX_EXAMPLES_MESSAGE)
    _check_int(batch_size, BATCH_SIZE_MESSAGE)
    _check_int(internal_batch_size, INTERNAL_BATCH_SIZE_MESSAGE, allow_none=True)
    texts = [str(t) for t in texts]
    if not texts:
        raise InputError(NO_TEXTS_MESSAGE)
    if prompted.prompt is None:
        raise InputError(NO_PROMPT_MESSAGE)
    fixed_target = _resolve_target(target, prompted.labels)
    groups = _sensitive_frame(sensitive_features, len(texts))
    texts = texts[:max_examples]
    if groups is not None:
        groups = groups.iloc[: len(texts)]

    started = time.perf_counter()
    attributor = _build_method(
        method, prompted, baseline=baseline, n_steps=int(n_steps),
        internal_batch_size=internal_batch_size, n_samples=int(n_samples),
        shapley_input=shapley_input, seed=int(seed),
    )
    encoded = prompted.encode(texts).to(prompted.device)
    lengths = encoded.attention_mask.sum(dim=1)
    order = torch.argsort(lengths.cpu(), stable=True)
    n = len(texts)
    n_virtual = prompted.num_virtual_tokens
    prompt_attr = np.zeros((n, n_virtual), dtype=np.float64)
    token_attr: list[np.ndarray | None] = [None] * n
    input_total = np.zeros(n, dtype=np.float64)
    deltas = np.full(n, np.nan)
    targets = np.zeros(n, dtype=np.int64)
    target_probs = np.zeros(n, dtype=np.float64)

    starts = range(0, n, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"attribute ({method.value})", unit="batch", leave=False)
    for start in starts:
        index = order[start:start + batch_size]
        device_index = index.to(prompted.device)
        batch = _slice_batch(encoded, device_index, int(lengths[device_index].max()))
        with torch.inference_mode():
            probs = prompted.forward_batch(batch).float()
        if fixed_target is None:
            target_ids = probs.argmax(dim=-1)
        else:
            target_ids = torch.full((len(index),), fixed_target, device=probs.device)
        rows = torch.arange(len(index), device=probs.device)
        out = attributor.attribute(batch, target_ids.clone())
        rows_np = index.numpy()
        prompt_attr[rows_np] = out.prompt.double().cpu().numpy()
        input_total[rows_np] = out.input_total.double().cpu().numpy()
        targets[rows_np] = target_ids.cpu().numpy()
        target_probs[rows_np] = probs[rows, target_ids].double().cpu().numpy()
        if out.delta is not None:
            deltas[rows_np] = out.delta.double().cpu().numpy()
        if out.inputs is not None:
            per_token = out.inputs.double().cpu().numpy()
            for row, example in enumerate(rows_np):
                token_attr[example] = per_token[row, : int(lengths[example])]
                input_total[example] = token_attr[example].sum()

    result = _summarise(
        prompted, texts, encoded, lengths.cpu(), prompt_attr, token_attr, input_total, deltas,
        targets, target_probs, groups,
    )
    result = {
        "method": method.value,
        "n_steps": int(n_steps) if method is AttributionMethod.INTEGRATED_GRADIENTS else None,
        "n_samples": int(n_samples) if method is AttributionMethod.SHAPLEY_SAMPLING else None,
        "shapley_input": shapley_input.value
        if method is AttributionMethod.SHAPLEY_SAMPLING else None,
        "baseline": baseline.value,
        "target_policy": "predicted" if fixed_target is None else "fixed",
        "target_function": "probability",
        "seed": int(seed),
        "labels": list(prompted.labels),
        "num_virtual_tokens": n_virtual,
        **result,
    }
    logger.info("attributed %d examples with %s in %.1f s (prompt share %.3f)", n, method.value,
                time.perf_counter() - started, result["prompt_share"])
    delta = result["max_convergence_delta"]
    if delta is not None and delta > CONVERGENCE_WARNING:
        logger.warning("integrated gradients: max |convergence delta| %.3f exceeds %.2f; the "
                       "integral is coarse, raise n_steps (now %d)", delta, CONVERGENCE_WARNING,
                       n_steps)
    return result


def _summarise(prompted, texts, encoded, lengths, prompt_attr, token_attr, input_total, deltas,
               targets, target_probs, groups) -> dict:
    n = len(texts)
    tokenizer = prompted.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    abs_prompt = np.abs(prompt_attr).sum(axis=1)
    abs_input = np.array([
        np.abs(t).sum() if t is not None else abs(total)
        for t, total in zip(token_attr, input_total, strict=True)
    ])
    denominator = abs_prompt + abs_input
    shares = np.divide(abs_prompt, denominator, out=np.zeros(n), where=denominator > 0)
    has_delta = not np.isnan(deltas).all()
    examples = []
    for i in range(n):
        ids = encoded.input_ids[i, : int(lengths[i])].tolist()
        tokens = tokenizer.convert_ids_to_tokens(ids)
        top = []
        if token_attr[i] is not None:
            candidates = [j for j, tid in enumerate(ids) if tid not in special]
            candidates.sort(key=lambda j: -abs(token_attr[i][j]))
            top = [{"token": tokens[j], "attribution": float(token_attr[i][j])}
                   for j in candidates[:TOP_TOKENS]]
        examples.append({
            "text": texts[i],
            "target": int(targets[i]),
            "target_label": prompted.labels[int(targets[i])],
            "target_probability": float(target_probs[i]),
            "tokens": list(tokens),
            "prompt_attributions": [float(v) for v in prompt_attr[i]],
            "token_attributions": None if token_attr[i] is None
            else [float(v) for v in token_attr[i]],
            "input_attribution": float(input_total[i]),
            "convergence_delta": float(deltas[i]) if has_delta else None,
            "top_tokens": top,
        })
    return {
        "n_examples": n,
        "prompt_share": float(shares.mean()),
        "per_position": [float(v) for v in prompt_attr.mean(axis=0)],
        "per_position_abs": [float(v) for v in np.abs(prompt_attr).mean(axis=0)],
        "max_convergence_delta": float(np.abs(deltas).max()) if has_delta else None,
        "examples": examples,
        "by_group": None if groups is None else group_attribution(prompt_attr, groups),
    }


def _group_keys(column: pd.Series) -> list[str]:
    return [MISSING_GROUP if pd.isna(v) else str(v) for v in column.tolist()]


def group_attribution(prompt_attr: np.ndarray, groups: pd.DataFrame) -> dict:
    """Mean attribution per virtual token per group of every sensitive feature.

    Parameters
    ----------
    prompt_attr : numpy.ndarray
        ``(n_examples, num_virtual_tokens)``.
    groups : pandas.DataFrame
        ``(n_examples, n_features)``.
    """
    out = {}
    for feature in groups.columns:
        keys = np.array(_group_keys(groups[feature]), dtype=object)
        names = sorted(set(keys.tolist()))
        means = {g: prompt_attr[keys == g].mean(axis=0) for g in names}
        stacked = np.stack([means[g] for g in names])
        spread = stacked.max(axis=0) - stacked.min(axis=0)
        top = np.argsort(-spread, kind="stable")[:TOP_POSITIONS]
        out[str(feature)] = {
            "groups": {g: [float(v) for v in means[g]] for g in names},
            "counts": {g: int((keys == g).sum()) for g in names},
            "max_difference": [float(v) for v in spread],
            "top_positions": [int(p) for p in top],
        }
    return out


# ----------------------------------------------------------------- summary
def _bar(value: float, scale: float, width: int = 20) -> str:
    if scale <= 0 or not math.isfinite(value):
        return ""
    return "#" * max(0, round(width * abs(value) / scale))


def format_attribution_summary(attribution: dict) -> str:
    """A readable terminal summary of an ``attribution`` result object.

    Parameters
    ----------
    attribution : dict
        What :func:`attribute_prompt` returns (or the result JSON's
        ``attribution`` object).

    Returns
    -------
    str
        Several lines, no trailing newline.
    """
    a = attribution
    settings = [f"baseline={a['baseline']}"]
    if a.get("n_steps") is not None:
        settings.insert(0, f"n_steps={a['n_steps']}")
    if a.get("n_samples") is not None:
        settings.insert(0, f"n_samples={a['n_samples']}")
    target = ("predicted label" if a.get("target_policy") == "predicted"
              else f"label {a['examples'][0]['target_label']!r}" if a.get("examples") else "fixed")
    lines = [
        f"Attribution: {a['method']} ({', '.join(settings)}), {a['n_examples']} examples, "
        f"target: probability of the {target}",
        f"Prompt share of |attribution|: {100 * a['prompt_share']:.1f}%",
    ]
    if a.get("max_convergence_delta") is not None:
        lines.append(f"Max |convergence delta|: {a['max_convergence_delta']:.2e}")
    lines.append("Per virtual token (mean, mean |.|):")
    scale = max(a["per_position_abs"], default=0.0)
    for i, (mean, mabs) in enumerate(
            zip(a["per_position"], a["per_position_abs"], strict=True)):
        lines.append(f"  v{i:<3d} {mean:+.4f}  {mabs:.4f}  {_bar(mabs, scale)}")
    shown = [e for e in a["examples"] if e.get("top_tokens")][:5]
    if shown:
        lines.append("Top input tokens (first examples):")
        for example in shown:
            text = example["text"] if len(example["text"]) <= 48 else example["text"][:45] + "..."
            tops = ", ".join(f"{t['token']} ({t['attribution']:+.3f})"
                             for t in example["top_tokens"][:3])
            lines.append(f"  {text!r} -> {example['target_label']}: {tops}")
    for feature, info in (a.get("by_group") or {}).items():
        counts = ", ".join(f"{g} (n={c})" for g, c in info["counts"].items())
        if info["top_positions"]:
            p = info["top_positions"][0]
            gap = f"largest group gap {info['max_difference'][p]:.4f} at v{p}"
        else:
            gap = "no positions"
        lines.append(f"By group {feature}: {gap}; groups: {counts}")
    return "\n".join(lines)


# ------------------------------------------------------------------- merging
def merge_attributions(pieces: Sequence[tuple[Sequence[int], dict]], *, n_examples: int,
                       seed: int = 0,
                       sensitive_features: pd.DataFrame | pd.Series | Mapping | None = None,
                       ) -> dict:
    """One ``attribution`` object from :func:`attribute_prompt` results over disjoint rows.

    Used to put together the batches a multi-process audit attributed on different
    processes. The per-example entries are put at their rows and the summaries
    (``prompt_share``, ``per_position``, ``per_position_abs``,
    ``max_convergence_delta``, ``by_group``) are recomputed over all rows with the
    formulas of :func:`attribute_prompt`, so merging the batches of one call's
    schedule gives that call's result exactly.

    Parameters
    ----------
    pieces : sequence of (sequence of int, dict)
        ``(rows, result)``: ``result["examples"][i]`` is the example of row ``rows[i]``.
        The other settings (method, labels, ...) are taken from the first piece.
    n_examples : int
        Rows in all; every row must be covered once.
    seed : int
        Recorded as the result's ``seed``.
    sensitive_features : pandas.DataFrame, Series or mapping, optional
        ``(n_examples, n_features)`` in row order; adds ``by_group``.

    Returns
    -------
    dict
        The ``attribution`` object of the result contract.
    """
    examples: list[dict | None] = [None] * n_examples
    for rows, part in pieces:
        for row, example in zip(rows, part["examples"], strict=True):
            examples[int(row)] = example
    missing = [i for i, e in enumerate(examples) if e is None]
    if missing or not pieces:
        raise ValueError(f"merge_attributions: rows {missing[:5]} are in no piece")
    groups = _sensitive_frame(sensitive_features, n_examples)
    prompt_attr = np.array([e["prompt_attributions"] for e in examples], dtype=np.float64)
    abs_prompt = np.abs(prompt_attr).sum(axis=1)
    abs_input = np.array([
        np.abs(np.asarray(e["token_attributions"], dtype=np.float64)).sum()
        if e["token_attributions"] is not None else abs(e["input_attribution"])
        for e in examples
    ])
    denominator = abs_prompt + abs_input
    shares = np.divide(abs_prompt, denominator, out=np.zeros(n_examples),
                       where=denominator > 0)
    deltas = [e["convergence_delta"] for e in examples]
    has_delta = any(d is not None for d in deltas)
    max_delta = (float(np.abs(np.array([np.nan if d is None else d for d in deltas])).max())
                 if has_delta else None)
    merged = dict(pieces[0][1])
    merged.update({
        "seed": int(seed),
        "n_examples": n_examples,
        "prompt_share": float(shares.mean()),
        "per_position": [float(v) for v in prompt_attr.mean(axis=0)],
        "per_position_abs": [float(v) for v in np.abs(prompt_attr).mean(axis=0)],
        "max_convergence_delta": max_delta,
        "examples": examples,
        "by_group": None if groups is None else group_attribution(prompt_attr, groups),
    })
    if max_delta is not None and max_delta > CONVERGENCE_WARNING:
        logger.warning("integrated gradients: max |convergence delta| %.3f exceeds %.2f; the "
                       "integral is coarse, raise n_steps (now %s)", max_delta,
                       CONVERGENCE_WARNING, merged.get("n_steps"))
    return merged


__all__ += ["merge_attributions"]  # listed here, beside its definition
