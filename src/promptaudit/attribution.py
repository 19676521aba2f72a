"""Attribute a prompted model's output to prompt positions and input tokens (Captum).

The API is Captum's: a method object holds its options, an attributor applies it::

    attributor = PromptAttributor(prompted, IntegratedGradients(n_steps="auto"))
    attribution = attributor.attribute(texts)          # the result's ``attribution`` object
    attribution["by_group"] = summarise_groups(attribution, sensitive_features)

(:class:`IntegratedGradients`, :class:`FeatureAblation`, :class:`ShapleySampling`;
:func:`attribution_method` builds one from the audit spec's flat options.) Every method
attributes over the concatenated embeddings ``[prompt ; input]``, handed to Captum as two
inputs ``(batch, num_virtual_tokens, hidden)`` and ``(batch, seq, hidden)``; per position,
the attribution is the sum over the hidden dimension (integrated gradients) or the value of
the position's feature group (the perturbation methods).

The attributed output is the **softmax probability of the target label** (the predicted
label unless the caller fixes one), so every method's attributions are in probability
points and satisfy completeness as the method promises: integrated gradients ``sum ≈ f(x) -
f(baseline)`` (Captum's convergence delta reported per example), Shapley sampling exactly,
feature ablation not at all (``f(x) - f(x with the position at the baseline)``).

Baselines (``zero``, ``pad``: the pad embedding, EOS where a causal LM has none, ``mean``:
the mean vocabulary embedding) are used at every position, prompt positions included.
Batch padding gets the input itself as baseline: its attribution is exactly zero and it is
trimmed from the results. Special tokens are attributed like any other; only
``top_tokens`` skips them. Texts are encoded once, ordered by length and attributed in
batches (:func:`attribution_batches`), steps or perturbations batched into the same forward
pass (``internal_batch_size`` rows, by default :data:`DEFAULT_TOKENS_PER_PASS` positions).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from promptaudit import choices as _choices
from promptaudit.choices import AttributionMethod, Baseline, ShapleyInput
from promptaudit.data import MISSING_GROUP
from promptaudit.errors import InputError
from promptaudit.prompted_model import EncodedBatch, PromptedModel
from promptaudit.stats import block_resampled_means, percentile_interval

__all__ = [  # and the one-line error messages below (``*_MESSAGE``), which tests assert
    "AttributionMethod", "Baseline", "ShapleyInput", "IntegratedGradients", "FeatureAblation",
    "ShapleySampling", "attribution_method", "PromptAttributor", "BatchAttribution",
    "attribution_batches", "budget_summary", "summarise_examples", "summarise_groups",
    "group_attribution", "like_for_like_differences", "like_for_like_statement",
    "merge_attributions", "convergence_summary", "format_attribution_summary",
    "baseline_vector", "PathIntegral", "adaptive_path_integral", "GROUP_BOOTSTRAP",
    "LIKE_FOR_LIKE_RULE",
]

logger = logging.getLogger(__name__)

# One-line error messages (``str.format`` templates); tests assert them exactly.
# The method and baseline choices live in promptaudit.choices (torch-free, shared with the
# spec); their messages are derived from the enums there.
UNKNOWN_METHOD_MESSAGE = _choices.UNKNOWN_ATTRIBUTION_CHOICE[AttributionMethod]
UNKNOWN_BASELINE_MESSAGE = _choices.UNKNOWN_ATTRIBUTION_CHOICE[Baseline]
UNKNOWN_SHAPLEY_INPUT_MESSAGE = _choices.UNKNOWN_ATTRIBUTION_CHOICE[ShapleyInput]
N_STEPS_MESSAGE = "n_steps: {value!r}; must be an integer >= 1"
N_STEPS_AUTO_MESSAGE = "n_steps: {value!r}; must be an integer >= 1 or 'auto'"
DELTA_TOLERANCE_MESSAGE = "delta_tolerance: {value!r}; must be a number > 0 and <= 1"
POSITION_TOLERANCE_MESSAGE = (
    "position_tolerance: {value!r}; must be a number > 0 (inf: completeness only) or None")
MAX_GRADIENT_EVALS_MESSAGE = "max_gradient_evals: {value!r}; must be an integer >= 5"
MAX_GRADIENT_EVALS_TOTAL_MESSAGE = (
    "max_gradient_evals_total: {value!r}; must be an integer >= 1 or None")
MIN_GROUP_SIZE_MESSAGE = "min_group_size: {value!r}; must be an integer >= 1"
N_SAMPLES_MESSAGE = "n_samples: {value!r}; must be an integer >= 1"
MAX_EXAMPLES_MESSAGE = "max_examples: {value!r}; must be an integer >= 1"
BATCH_SIZE_MESSAGE = "batch_size: {value!r}; must be an integer >= 1"
INTERNAL_BATCH_SIZE_MESSAGE = "internal_batch_size: {value!r}; must be an integer >= 1 or None"
TARGET_RANGE_MESSAGE = "target: label index {value!r} is out of range; allowed: 0 to {last}"
TARGET_LABEL_MESSAGE = "target: unknown label {value!r}; allowed: {allowed} or an index 0 to {last}"
NO_TEXTS_MESSAGE = "texts: no examples to attribute; give at least one text"
NO_PROMPT_MESSAGE = (
    "prompt: the model carries no soft prompt; attribution to prompt positions needs one")
SENSITIVE_ROWS_MESSAGE = (
    "sensitive_features: {rows} rows but {texts} texts; give one row per text, in order")

#: Token positions (rows x (num_virtual_tokens + seq)) per forward pass when
#: ``internal_batch_size`` is None (never fewer rows than the batch's examples).
DEFAULT_TOKENS_PER_PASS = 4096
#: A max |convergence delta| above this is logged as a warning (raise n_steps).
CONVERGENCE_WARNING = 0.05
#: ``n_steps`` value that asks for adaptive integrated gradients.
AUTO_STEPS = "auto"
#: Default completeness tolerance of adaptive integrated gradients (probability points).
DEFAULT_DELTA_TOLERANCE = 0.02
#: Adaptive integrated gradients: the per-position tolerance is this multiple of
#: ``delta_tolerance`` unless given (chosen by measurement: benchmarks/README.md).
POSITION_TOLERANCE_FACTOR = 2.5
#: Examples per batch that audits use for adaptive integrated gradients: late rounds add a
#: few points per example, so more examples per batch fill the forward passes.
ADAPTIVE_BATCH_SIZE = 32
#: Examples per batch that audits use for every other method (``PromptAttributor``'s default).
BATCH_SIZE = 8
#: Default cap on gradient evaluations per example (adaptive integrated gradients).
DEFAULT_MAX_GRADIENT_EVALS = 512
#: Equal intervals adaptive integrated gradients starts from (``2 * this + 1`` points).
INITIAL_INTERVALS = 2
#: Default smallest group whose per-group attribution enters a gap (as in fairness).
DEFAULT_MIN_GROUP_SIZE = 30
#: Bootstrap replicates of a like-for-like group difference.
GROUP_BOOTSTRAP = 1000
#: Interval ends closer to 0 than this (float rounding of equal means) count as 0.
_ZERO_TOLERANCE = 1e-12
#: Examples a group and the reference each need in a stratum for it to be compared.
MIN_STRATUM_ROWS = 2
LIKE_FOR_LIKE_RULE = (
    "each group against the largest group, within rows of the same label (weighted by "
    "n_g*n_r/(n_g+n_r)); percentile bootstrap interval over examples of each (group, label) "
    "cell; evidence of a difference only where the interval excludes 0 and the difference "
    "exceeds the integration error; groups under min_group_size are not compared")
#: Input tokens listed per example in ``top_tokens``.
TOP_TOKENS = 5
#: Virtual-token positions listed per feature in ``by_group[...]["top_positions"]``.
TOP_POSITIONS = 5


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
def _check_int(value, message: str, *, allow_none: bool = False, minimum: int = 1) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(message.format(value=value))


@dataclass(frozen=True, kw_only=True)
class _Method:
    """Options every method shares (Captum-style: a method object holds its options).

    Parameters
    ----------
    baseline : {"pad", "zero", "mean"}
        Reference embedding at every prompt and input position.
    internal_batch_size : int, optional
        Most rows (examples x steps or perturbations) per forward pass; ``None``: as many
        as fit :data:`DEFAULT_TOKENS_PER_PASS` token positions. Trades memory for speed;
        results do not depend on it beyond float rounding.
    """

    name: ClassVar[AttributionMethod]
    baseline: Baseline | str = Baseline.PAD
    internal_batch_size: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline", Baseline.parse(self.baseline))
        _check_int(self.internal_batch_size, INTERNAL_BATCH_SIZE_MESSAGE, allow_none=True)

    @property
    def audit_batch_size(self) -> int:
        """Examples per attribution batch in an audit."""
        return BATCH_SIZE

    def engine(self, prompted: PromptedModel, seed: int) -> _Engine:
        """The batch-level attributor of this method on ``prompted``."""
        raise NotImplementedError

    def header(self) -> dict:
        """The result's method fields: ``method``, ``n_steps``, ``position_tolerance``,
        ``n_samples``, ``shapley_input`` (None where the method has none), ``baseline``."""
        return {"method": self.name.value, "n_steps": None, "position_tolerance": None,
                "n_samples": None, "shapley_input": None, "baseline": self.baseline.value}


@dataclass(frozen=True, kw_only=True)
class IntegratedGradients(_Method):
    """Integrated gradients over ``[prompt ; input]`` embeddings.

    Parameters
    ----------
    n_steps : int or "auto"
        Gauss-Legendre steps (Captum), or ``"auto"``: adaptive steps per example until its
        attributions sum to ``f(x) - f(baseline)`` within ``delta_tolerance``
        (:func:`adaptive_path_integral`).
    delta_tolerance : float
        The completeness tolerance (probability points); with fixed steps it only
        decides ``converged``.
    max_gradient_evals : int
        ``"auto"``: most gradient evaluations per example (then not converged).
    position_tolerance : float, optional
        ``"auto"``: allowed estimated sum of absolute position errors; ``None``:
        :data:`POSITION_TOLERANCE_FACTOR` x ``delta_tolerance``; ``inf``: completeness only.
    max_gradient_evals_total : int, optional
        Budget for the whole run: texts are attributed in blocks of ``batch_size`` in the
        order given and no new block starts once it is spent (the result has ``budget``).
    baseline, internal_batch_size
        As every method (:class:`_Method`).

    Examples
    --------
    >>> method = IntegratedGradients(n_steps="auto", delta_tolerance=0.02)
    >>> attributor = PromptAttributor(prompted, method)  # doctest: +SKIP
    >>> attributor.attribute(["a gripping film"])["prompt_share"]  # doctest: +SKIP
    0.41
    """

    name = AttributionMethod.INTEGRATED_GRADIENTS
    n_steps: int | str = 32
    delta_tolerance: float = DEFAULT_DELTA_TOLERANCE
    max_gradient_evals: int = DEFAULT_MAX_GRADIENT_EVALS
    position_tolerance: float | None = None
    max_gradient_evals_total: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.n_steps, str) and not self.adaptive:
            raise InputError(N_STEPS_AUTO_MESSAGE.format(value=self.n_steps))
        if not self.adaptive:
            _check_int(self.n_steps, N_STEPS_MESSAGE)
        value = self.delta_tolerance
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value)) or not 0 < float(value) <= 1):
            raise InputError(DELTA_TOLERANCE_MESSAGE.format(value=value))
        value = self.position_tolerance
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or math.isnan(float(value)) or float(value) <= 0):
            raise InputError(POSITION_TOLERANCE_MESSAGE.format(value=value))
        _check_int(self.max_gradient_evals, MAX_GRADIENT_EVALS_MESSAGE,
                   minimum=2 * INITIAL_INTERVALS + 1)
        _check_int(self.max_gradient_evals_total, MAX_GRADIENT_EVALS_TOTAL_MESSAGE,
                   allow_none=True)

    @property
    def adaptive(self) -> bool:
        """True for ``n_steps="auto"``."""
        return isinstance(self.n_steps, str) and self.n_steps == AUTO_STEPS

    @property
    def audit_batch_size(self) -> int:
        """:data:`ADAPTIVE_BATCH_SIZE` for adaptive steps, :data:`BATCH_SIZE` otherwise."""
        return ADAPTIVE_BATCH_SIZE if self.adaptive else BATCH_SIZE

    @property
    def resolved_position_tolerance(self) -> float:
        """The per-position tolerance adaptive steps use."""
        return (POSITION_TOLERANCE_FACTOR * float(self.delta_tolerance)
                if self.position_tolerance is None else float(self.position_tolerance))

    def engine(self, prompted: PromptedModel, seed: int) -> _Engine:
        return (_AdaptiveStepsEngine if self.adaptive else _FixedStepsEngine)(prompted, self)

    def header(self) -> dict:
        position = self.resolved_position_tolerance
        return {**super().header(), "n_steps": AUTO_STEPS if self.adaptive else int(self.n_steps),
                "position_tolerance": position
                if self.adaptive and math.isfinite(position) else None}


@dataclass(frozen=True, kw_only=True)
class FeatureAblation(_Method):
    """Feature ablation (Captum ``FeatureAblation``): each virtual token and each input
    token replaced by the baseline embedding, one at a time.

    The attribution of a position is ``f(x) - f(x with that position set to the
    baseline)``; attributions do not sum to anything in general.
    """

    name = AttributionMethod.FEATURE_ABLATION

    def engine(self, prompted: PromptedModel, seed: int) -> _Engine:
        return _PerturbationEngine(prompted, self)


@dataclass(frozen=True, kw_only=True)
class ShapleySampling(_Method):
    """Shapley value sampling (Captum ``ShapleyValueSampling``) over prompt positions.

    Players are the virtual tokens plus the whole input (``shapley_input="whole"``:
    ``n_samples * (num_virtual_tokens + 1)`` passes, no per-token values) or every input
    token (``"tokens"``). The attributions sum to ``f(x) - f(baseline)``. Permutations of
    batch ``i`` come from ``seed + i`` in a forked RNG (the global RNG is left as it was).

    Parameters
    ----------
    n_samples : int
        Sampled permutations.
    shapley_input : {"whole", "tokens"}
    """

    name = AttributionMethod.SHAPLEY_SAMPLING
    n_samples: int = 25
    shapley_input: ShapleyInput | str = ShapleyInput.WHOLE

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "shapley_input", ShapleyInput.parse(self.shapley_input))
        _check_int(self.n_samples, N_SAMPLES_MESSAGE)

    def engine(self, prompted: PromptedModel, seed: int) -> _Engine:
        return _PerturbationEngine(prompted, self, seed=seed)

    def header(self) -> dict:
        return {**super().header(), "n_samples": int(self.n_samples),
                "shapley_input": self.shapley_input.value}


METHODS: dict[AttributionMethod, type[_Method]] = {
    cls.name: cls for cls in (IntegratedGradients, FeatureAblation, ShapleySampling)}


def attribution_method(method: AttributionMethod | str = AttributionMethod.INTEGRATED_GRADIENTS,
                       **options) -> _Method:
    """The method object named ``method`` from flat options (the audit spec's and the CLI's form).

    Options the method does not take (``n_samples`` for integrated gradients, ...) are
    ignored, as the spec carries every method's options.

    Examples
    --------
    >>> method = attribution_method("shapley_sampling", n_samples=10, n_steps="auto")
    >>> type(method).__name__, method.n_samples, method.shapley_input.value
    ('ShapleySampling', 10, 'whole')
    """
    cls = METHODS[AttributionMethod.parse(method)]
    names = {field.name for field in dataclasses.fields(cls)}
    return cls(**{key: value for key, value in options.items() if key in names})


# ------------------------------------------------------------------ engines
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
    n_steps, converged, position_error : torch.Tensor or None
        ``(batch,)`` adaptive integrated gradients only: gradient evaluations used, whether
        both tolerances were met, the estimated sum of absolute position errors.
    """

    prompt: torch.Tensor
    inputs: torch.Tensor | None
    input_total: torch.Tensor
    delta: torch.Tensor | None = None
    n_steps: torch.Tensor | None = None
    converged: torch.Tensor | None = None
    position_error: torch.Tensor | None = None


class _Engine:
    """Attributes one encoded batch with one method: the target function and baselines.

    Parameters
    ----------
    prompted : PromptedModel
        A model with a soft prompt.
    method : _Method
        The method object (its options).
    """

    def __init__(self, prompted: PromptedModel, method: _Method):
        self.prompted = prompted
        self.method = method
        self.baseline_embedding = baseline_vector(prompted, method.baseline)

    def rows_per_pass(self, examples: int, seq: int) -> int:
        """Rows per forward pass for a batch of ``examples`` inputs of ``seq`` tokens."""
        if self.method.internal_batch_size is not None:
            return int(self.method.internal_batch_size)
        positions = self.prompted.num_virtual_tokens + seq
        return max(examples, DEFAULT_TOKENS_PER_PASS // max(positions, 1))

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


class _FixedStepsEngine(_Engine):
    """Integrated gradients with fixed Gauss-Legendre steps (Captum ``IntegratedGradients``)."""

    def __init__(self, prompted: PromptedModel, method: IntegratedGradients):
        from captum.attr import IntegratedGradients as CaptumIntegratedGradients

        super().__init__(prompted, method)
        self._captum = CaptumIntegratedGradients(prompted.label_probabilities)

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        inputs, baselines, additional = self.prepare(batch)
        (prompt_attr, input_attr), delta = self._captum.attribute(
            inputs, baselines=baselines, target=target, additional_forward_args=additional,
            n_steps=int(self.method.n_steps),
            internal_batch_size=self.rows_per_pass(*inputs[1].shape[:2]),
            return_convergence_delta=True,
        )
        prompt = prompt_attr.detach().sum(dim=-1)
        tokens = input_attr.detach().sum(dim=-1)
        return BatchAttribution(prompt, tokens, tokens.sum(dim=-1), delta.detach().reshape(-1))


class _AdaptiveStepsEngine(_Engine):
    """Integrated gradients with adaptive steps (:func:`adaptive_path_integral` per example):
    Captum's ``compute_gradients``, the new points of a batch's open examples sharing passes.
    """

    def _recorded(self, outputs: list, *args) -> torch.Tensor:
        # the forward function, keeping its output: f at the point comes with the gradient
        out = self.prompted.label_probabilities(*args)
        outputs.append(out)
        return out

    def _path_points(self, paths, alphas, prepared, target, lengths):
        """``(f, g)`` at ``alphas`` on the paths of examples ``paths``: ``(k,)`` float64
        target probabilities and ``(k, n_virtual + seq)`` float64 path gradients."""
        from captum._utils.gradient import compute_gradients

        (prompt, embeds), (prompt0, embeds0), additional = prepared
        d_prompt, d_embeds = prompt - prompt0, embeds - embeds0
        n_virtual, seq, device = prompt.shape[1], embeds.shape[1], prompt.device
        rows_per_pass = self.rows_per_pass(*embeds.shape[:2])
        # rows ordered by their example's length, so that each pass can drop the
        # padding columns none of its rows needs (right padding, masked: exact zeros)
        order = torch.argsort(lengths[paths], stable=True)
        # float64 on the CPU, where the quadrature reads them (no float64 on MPS)
        f = torch.empty(len(paths), dtype=torch.float64)
        g = torch.zeros(len(paths), n_virtual + seq, dtype=torch.float64)
        for start in range(0, len(paths), rows_per_pass):
            chunk = order[start:start + rows_per_pass]
            ex = paths[chunk].to(device)
            keep = int(lengths[paths[chunk]].max())
            a = alphas[chunk].to(device, prompt.dtype).view(-1, 1, 1)
            scaled = ((prompt0[ex] + a * d_prompt[ex]).requires_grad_(),
                      (embeds0[ex, :keep] + a * d_embeds[ex, :keep]).requires_grad_())
            extra = tuple(None if t is None else t[ex] if t.dim() == 1 else t[ex, :keep]
                          for t in additional)
            outputs: list[torch.Tensor] = []
            grads = compute_gradients(functools.partial(self._recorded, outputs), scaled,
                                      target_ind=target[ex], additional_forward_args=extra)
            rows = torch.arange(len(ex), device=device)
            f[chunk] = outputs[0].detach()[rows, target[ex]].cpu().double()
            g[chunk, :n_virtual + keep] = torch.cat(
                [(grads[0] * d_prompt[ex]).sum(dim=-1),
                 (grads[1] * d_embeds[ex, :keep]).sum(dim=-1)], dim=1).cpu().double()
        return f, g

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        prepared = self.prepare(batch)
        n_paths, n_virtual = prepared[0][0].shape[:2]
        lengths = prepared[2][0].sum(dim=1).cpu()  # (batch,) real tokens per example
        method = self.method
        path = adaptive_path_integral(
            functools.partial(self._path_points, prepared=prepared, target=target,
                              lengths=lengths),
            n_paths, tolerance=float(method.delta_tolerance),
            max_evals=int(method.max_gradient_evals),
            position_tolerance=method.resolved_position_tolerance)
        tokens = path.integral[:, n_virtual:]
        return BatchAttribution(path.integral[:, :n_virtual], tokens, tokens.sum(dim=-1),
                                path.delta, path.n_evals, path.converged, path.position_error)


class _PerturbationEngine(_Engine):
    """Feature ablation or Shapley value sampling (Captum) over feature groups: each
    virtual token, and each input token or (Shapley, ``whole``) the whole input."""

    def __init__(self, prompted: PromptedModel, method: FeatureAblation | ShapleySampling, *,
                 seed: int = 0):
        from captum import attr as captum_attr

        super().__init__(prompted, method)
        self.shapley = isinstance(method, ShapleySampling)
        self.seed = int(seed)
        self._batches = 0
        captum_class = (captum_attr.ShapleyValueSampling if self.shapley
                        else captum_attr.FeatureAblation)
        self._captum = captum_class(prompted.label_probabilities)

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

    def attribute(self, batch: EncodedBatch, target: torch.Tensor) -> BatchAttribution:
        inputs, baselines, additional = self.prepare(batch)
        examples, seq = inputs[1].shape[:2]
        whole = self.shapley and self.method.shapley_input is ShapleyInput.WHOLE
        options = {"n_samples": int(self.method.n_samples)} if self.shapley else {}
        # Shapley permutations of batch i from seed + i, in a forked RNG
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(self.seed + self._batches)
            prompt_attr, input_attr = self._captum.attribute(
                inputs, baselines=baselines, target=target, additional_forward_args=additional,
                feature_mask=self.feature_masks(seq, input_whole=whole),
                perturbations_per_eval=max(1, self.rows_per_pass(examples, seq)
                                           // max(examples, 1)), **options)
        self._batches += 1
        # every hidden element of a group carries the group's value
        prompt = prompt_attr[..., 0].clone()
        if whole:
            return BatchAttribution(prompt, None, input_attr[:, 0, 0].clone())
        tokens = input_attr[..., 0].clone()
        if self.shapley:  # padding is a player whose baseline is itself: zero, but keep it clean
            tokens = tokens * batch.attention_mask.to(tokens.device, tokens.dtype)
        return BatchAttribution(prompt, tokens, tokens.sum(dim=-1))


# ------------------------------------------------------- adaptive quadrature
@dataclass
class PathIntegral:
    """Adaptive path integrals of a batch of examples.

    Attributes
    ----------
    integral : torch.Tensor
        ``(n_paths, d)`` float64: composite Simpson ``int_0^1 g(alpha) d alpha`` per path.
    delta : torch.Tensor
        ``(n_paths,)`` float64: ``sum(integral) - (f(1) - f(0))``.
    error_bound : torch.Tensor
        ``(n_paths,)`` float64: sum of the absolute interval completeness errors.
    n_evals : torch.Tensor
        ``(n_paths,)`` int64: points at which ``g`` was evaluated (each once).
    converged : torch.Tensor
        ``(n_paths,)`` bool: both tolerances met.
    position_error : torch.Tensor
        ``(n_paths,)`` float64: estimated ``sum_j |integral[:, j] - exact_j|`` (no
        cancellation; :func:`adaptive_path_integral`).
    """

    integral: torch.Tensor
    delta: torch.Tensor
    error_bound: torch.Tensor
    n_evals: torch.Tensor
    converged: torch.Tensor
    position_error: torch.Tensor | None = None


#: Of the intervals over their share, bisect those with at least this fraction of the
#: path's largest interval error each round (0: all of them).
REFINE_FRACTION = 0.5
#: Smallest interval the adaptive rule still bisects (the path is [0, 1]).
MIN_INTERVAL = 2.0 ** -30


def adaptive_path_integral(evaluate, n_paths: int, *, tolerance: float, max_evals: int,
                           initial_intervals: int = INITIAL_INTERVALS,
                           position_tolerance: float | None = None) -> PathIntegral:
    """Integrate ``g`` along ``n_paths`` paths until each meets its tolerances.

    Each path has a scalar ``f`` and a vector ``g`` with ``sum(g(alpha)) = d f / d alpha``
    (integrated gradients: ``(x - x') * grad f`` summed over the hidden size, per position).
    ``[0, 1]`` is split into intervals, each integrated with Simpson's rule; each has an
    exact completeness error ``err = sum(Simpson) - (f(b) - f(a))`` and a per-component
    estimate ``e = Simpson - trapezoid`` (:func:`_interval_errors`), whose L1 norm bounds
    errors that cancel in the sum. A path is done when ``sum |err| <= tolerance`` and ``sum
    |e|_1 <= position_tolerance``; otherwise its intervals over their share of either, with at
    least :data:`REFINE_FRACTION` of the largest excess, are bisected (nested: no point is
    evaluated twice). The new points of all open paths go to one ``evaluate`` call per round;
    a path that would exceed ``max_evals`` points stops, not converged.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(paths, alphas) -> (f, g)``: ``paths`` ``(k,)`` int64 path
        indices, ``alphas`` ``(k,)`` float64 points in ``[0, 1]``; returns ``f``
        ``(k,)`` and ``g`` ``(k, d)``.
    n_paths : int
    tolerance : float
        Allowed ``sum |err|`` per path (an upper bound on ``|delta|``).
    max_evals : int
        Most points per path (at least ``2 * initial_intervals + 1``).
    initial_intervals : int
        Equal intervals to start with.
    position_tolerance : float, optional
        Allowed ``sum |e|_1`` per path; ``None`` uses
        :data:`POSITION_TOLERANCE_FACTOR` times ``tolerance``, ``math.inf``
        checks completeness only.

    Returns
    -------
    PathIntegral
    """
    k0 = int(initial_intervals)
    max_evals = max(int(max_evals), 2 * k0 + 1)
    tol_sum = float(tolerance)
    tol_pos = (POSITION_TOLERANCE_FACTOR * tol_sum if position_tolerance is None
               else float(position_tolerance))
    paths = [_Path(intervals=[(j / k0, (j + 1) / k0) for j in range(k0)],
                   pending=[j / (2 * k0) for j in range(2 * k0 + 1)]) for _ in range(n_paths)]
    open_paths = set(range(n_paths))
    rounds = 0
    while open_paths:
        rows = [(p, a) for p in sorted(open_paths) for a in paths[p].pending]
        if rows:
            f, g = evaluate(torch.tensor([p for p, _ in rows], dtype=torch.long),
                            torch.tensor([a for _, a in rows], dtype=torch.float64))
            f = f.detach().double().cpu()
            g = g.detach().double().cpu()
            for row, (p, a) in enumerate(rows):
                paths[p].points[a] = (float(f[row]), g[row])
        rounds += 1
        for p in sorted(open_paths):
            if not paths[p].refine(tol_sum, tol_pos, max_evals):
                open_paths.discard(p)
    logger.debug("adaptive integrated gradients: %d rounds, %d points", rounds,
                 sum(len(path.points) for path in paths))
    return _path_integral(paths)


@dataclass
class _Path:
    """One path of :func:`adaptive_path_integral`: its points, intervals and their errors.

    Attributes
    ----------
    intervals : list of (float, float)
        The current intervals ``(a, b)``, each with the points ``a``, ``(a+b)/2``, ``b``.
    pending : list of float
        Points still to evaluate.
    points : dict
        ``alpha -> (f, g)`` with ``g`` ``(d,)`` float64.
    errors : dict
        ``(a, b) -> (completeness error, L1 position error)`` of every interval seen.
    converged : bool
    """

    intervals: list[tuple[float, float]]
    pending: list[float]
    points: dict[float, tuple[float, torch.Tensor]] = field(default_factory=dict)
    errors: dict[tuple[float, float], tuple[float, float]] = field(default_factory=dict)
    converged: bool = False

    def refine(self, tol_sum: float, tol_pos: float, max_evals: int) -> bool:
        """Check the tolerances and bisect the worst intervals; False when the path is done
        (converged, or the cap or the smallest interval reached)."""
        self.pending = []
        for a, b in self.intervals:  # each interval's errors once (intervals persist)
            if (a, b) not in self.errors:
                self.errors[(a, b)] = _interval_errors(self.points, a, b)
        errs = [self.errors[ab] for ab in self.intervals]
        if sum(abs(e[0]) for e in errs) <= tol_sum and sum(e[1] for e in errs) <= tol_pos:
            self.converged = True
            return False
        split = set(self._worst(errs, tol_sum, tol_pos, (max_evals - len(self.points)) // 2))
        if not split:
            return False  # cap reached (or intervals too small): not converged
        refined = []
        for i, (a, b) in enumerate(self.intervals):
            if i in split:
                m = (a + b) / 2
                refined += [(a, m), (m, b)]
                self.pending += [(a + m) / 2, (m + b) / 2]
            else:
                refined.append((a, b))
        self.intervals = refined
        return True

    def _worst(self, errs: list, tol_sum: float, tol_pos: float, budget: int) -> list[int]:
        """Intervals to bisect: of those over their share of a tolerance, the ones with at
        least :data:`REFINE_FRACTION` of the largest excess, largest first, ``budget`` at most."""
        intervals = self.intervals
        excess = [max(abs(c) / tol_sum, e / tol_pos) / (b - a)
                  for (c, e), (a, b) in zip(errs, intervals, strict=True)]
        over = sorted((i for i, (a, b) in enumerate(intervals)
                       if excess[i] > 1 and b - a > MIN_INTERVAL),
                      key=lambda i: -excess[i] * (intervals[i][1] - intervals[i][0]))
        if not over:
            return []
        worst = excess[over[0]] * (intervals[over[0]][1] - intervals[over[0]][0])
        return [i for i in over if excess[i] * (intervals[i][1] - intervals[i][0])
                >= REFINE_FRACTION * worst][:budget]


def _path_integral(paths: list[_Path]) -> PathIntegral:
    """The composite Simpson integrals and error figures of finished paths."""
    integral = torch.stack([
        sum(_simpson(path.points, a, b) for a, b in path.intervals) for path in paths
    ])
    delta = torch.tensor([float(integral[p].sum())
                          - (path.points[1.0][0] - path.points[0.0][0])
                          for p, path in enumerate(paths)], dtype=torch.float64)
    # every final interval's errors were computed in the loop (before it was accepted)
    finals = [[path.errors[ab] for ab in path.intervals] for path in paths]
    bound = torch.tensor([sum(abs(e[0]) for e in errs) for errs in finals], dtype=torch.float64)
    position = torch.tensor([sum(e[1] for e in errs) for errs in finals], dtype=torch.float64)
    return PathIntegral(integral, delta, bound,
                        torch.tensor([len(path.points) for path in paths], dtype=torch.long),
                        torch.tensor([path.converged for path in paths], dtype=torch.bool),
                        position)


def _simpson(points: dict, a: float, b: float) -> torch.Tensor:
    m = (a + b) / 2
    return (b - a) / 6 * (points[a][1] + 4 * points[m][1] + points[b][1])


def _interval_errors(points: dict, a: float, b: float) -> tuple[float, float]:
    """``(completeness error, L1 norm of the per-component error estimate)`` of ``[a, b]``.

    The estimate is Simpson minus the 3-point trapezoid, ``(b - a) / 12 * (2 g(m) -
    g(a) - g(b))``, per component.
    """
    m = (a + b) / 2
    g_a, g_m, g_b = points[a][1], points[m][1], points[b][1]
    simpson = (b - a) / 6 * (g_a + 4 * g_m + g_b)
    completeness = float(simpson.sum()) - (points[b][0] - points[a][0])
    position = (b - a) / 12 * (2 * g_m - g_a - g_b)
    return completeness, float(position.abs().sum())


# ------------------------------------------------------------- the attributor
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


def _sensitive_frame(sensitive_features, n_rows: int) -> pd.DataFrame:
    if isinstance(sensitive_features, pd.Series):
        frame = sensitive_features.to_frame(name=sensitive_features.name or "sensitive_feature")
    elif isinstance(sensitive_features, pd.DataFrame):
        frame = sensitive_features
    elif isinstance(sensitive_features, Mapping):
        frame = pd.DataFrame(dict(sensitive_features))
    else:
        frame = pd.DataFrame(sensitive_features)
    if len(frame) != n_rows:
        raise InputError(SENSITIVE_ROWS_MESSAGE.format(rows=len(frame), texts=n_rows))
    return frame.reset_index(drop=True)


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


def attribution_batches(lengths: Sequence[int] | torch.Tensor, *, batch_size: int,
                        blocks: bool = False) -> list[torch.Tensor]:
    """Row indices of the batches :class:`PromptAttributor` forms (the one schedule).

    Parameters
    ----------
    lengths : sequence of int or torch.Tensor
        ``(n,)`` token counts of the texts.
    batch_size : int
    blocks : bool
        False: the texts ordered by length (stable), cut into batches. True (a budget):
        blocks of ``batch_size`` consecutive texts, each ordered by length.

    Returns
    -------
    list of torch.Tensor
        ``(at most batch_size,)`` int64 row indices per batch; every row once.
    """
    lengths = torch.as_tensor(lengths.cpu() if isinstance(lengths, torch.Tensor) else lengths)
    starts = range(0, len(lengths), int(batch_size))
    if blocks:
        return [start + torch.argsort(lengths[start:start + batch_size], stable=True)
                for start in starts]
    order = torch.argsort(lengths, stable=True)
    return [order[start:start + batch_size] for start in starts]


def budget_summary(budget: int, examples: Sequence[Mapping], n_requested: int) -> dict:
    """The result's ``budget``: ``examples`` attributed of ``n_requested`` under ``budget``."""
    used = sum(int(example.get("n_steps") or 0) for example in examples)
    return {"max_gradient_evals_total": int(budget), "n_gradient_evals": used,
            "n_requested": n_requested, "n_attributed": len(examples),
            "n_left_out": n_requested - len(examples)}


class PromptAttributor:
    """Attribute the target-label probability to prompt positions and input tokens.

    Parameters
    ----------
    prompted : PromptedModel
        A model with a soft prompt ``(num_virtual_tokens, hidden)``.
    method : IntegratedGradients, FeatureAblation or ShapleySampling, optional
        The method and its options (default: ``IntegratedGradients()``);
        :func:`attribution_method` builds one from flat options.
    batch_size : int
        Examples per attribution batch (audits use ``method.audit_batch_size``); results
        do not depend on it beyond float rounding.
    seed : int
        Recorded in the result; seeds Shapley permutations (batch ``i``: ``seed + i``).
    progress : bool
        Show a tqdm progress bar over batches.

    Raises
    ------
    InputError
        No prompt; ``batch_size`` below 1.

    Examples
    --------
    >>> attributor = PromptAttributor(prompted, IntegratedGradients(n_steps=16))  # doctest: +SKIP
    >>> result = attributor.attribute(["a gripping film"])  # doctest: +SKIP
    >>> result["prompt_share"], len(result["per_position"])  # doctest: +SKIP
    (0.41, 10)
    """

    def __init__(self, prompted: PromptedModel, method: _Method | None = None, *,
                 batch_size: int = BATCH_SIZE, seed: int = 0, progress: bool = False):
        if prompted.prompt is None:
            raise InputError(NO_PROMPT_MESSAGE)
        _check_int(batch_size, BATCH_SIZE_MESSAGE)
        self.prompted = prompted
        self.method = IntegratedGradients() if method is None else method
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.progress = progress

    def attribute(self, texts: Sequence[str], *, target: int | str | None = None,
                  max_examples: int | None = None) -> dict:
        """Attribute ``texts`` (the first ``max_examples``, in the order given).

        Parameters
        ----------
        texts : sequence of str
            ``(n_texts,)`` inputs.
        target : int, str or None
            Label index or name to attribute; ``None``: each example's predicted label.
        max_examples : int, optional
            Attribute the first ``max_examples`` texts (no sampling); None: all.

        Returns
        -------
        dict
            The result's ``attribution`` object (docs/result-json.md#attribution), plain
            JSON-able values; ``by_group`` is None (:func:`summarise_groups` fills it).

        Raises
        ------
        InputError
            ``max_examples`` below 1; no texts; a target out of range or not a label.
        """
        _check_int(max_examples, MAX_EXAMPLES_MESSAGE, allow_none=True)
        texts = [str(t) for t in texts]
        if not texts:
            raise InputError(NO_TEXTS_MESSAGE)
        fixed_target = _resolve_target(target, self.prompted.labels)
        texts = texts[:max_examples]
        started = time.perf_counter()
        examples = self._attribute_batches(texts, fixed_target)
        result = self._result(examples, len(texts), fixed_target)
        self._log(result, started)
        return result

    def _attribute_batches(self, texts: list[str], fixed_target: int | None) -> list[dict]:
        """Every text's example entry, in order; under a budget, those of the blocks that ran
        before it was spent."""
        method, prompted = self.method, self.prompted
        engine = method.engine(prompted, self.seed)
        budget = getattr(method, "max_gradient_evals_total", None)
        encoded = prompted.encode(texts).to(prompted.device)
        lengths = encoded.attention_mask.sum(dim=1)
        batches = attribution_batches(lengths, batch_size=self.batch_size,
                                      blocks=budget is not None)
        if self.progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"attribute ({method.name.value})", unit="batch",
                           leave=False)
        examples: list[dict | None] = [None] * len(texts)
        for index in batches:
            block_start = int(index.min())
            if budget is not None and block_start > 0 and sum(
                    examples[i]["n_steps"] for i in range(block_start)) >= budget:
                return examples[:block_start]  # the budget is spent: no new block starts
            device_index = index.to(prompted.device)
            batch = _slice_batch(encoded, device_index, int(lengths[device_index].max()))
            with torch.inference_mode():
                probs = prompted.forward_batch(batch).float()
            if fixed_target is None:
                target_ids = probs.argmax(dim=-1)
            else:
                target_ids = torch.full((len(index),), fixed_target, device=probs.device)
            out = engine.attribute(batch, target_ids.clone())
            picked = probs[torch.arange(len(index), device=probs.device), target_ids]
            for row, example in zip(index.tolist(), _batch_examples(
                    self.prompted, method, batch, out, target_ids, picked), strict=True):
                examples[row] = {"text": texts[row], **example}
        return examples

    def _result(self, examples: list[dict], n_requested: int, fixed_target: int | None) -> dict:
        """The ``attribution`` object of ``examples`` (of ``n_requested`` texts)."""
        method = self.method
        integrated = isinstance(method, IntegratedGradients)
        result = {
            **method.header(),
            "target_policy": "predicted" if fixed_target is None else "fixed",
            "target_function": "probability",
            "seed": self.seed,
            "labels": list(self.prompted.labels),
            "num_virtual_tokens": self.prompted.num_virtual_tokens,
            **summarise_examples(examples),
            "examples": examples,
            **convergence_summary(
                examples, delta_tolerance=float(method.delta_tolerance) if integrated else None,
                max_gradient_evals=int(method.max_gradient_evals)
                if integrated and method.adaptive else None),
        }
        budget = getattr(method, "max_gradient_evals_total", None)
        if budget is not None:
            result["budget"] = budget_summary(budget, examples, n_requested)
            if len(examples) < n_requested:
                logger.info("attribution budget of %d gradient evaluations spent after %d of %d "
                            "examples (%d used); the other %d were left out", budget,
                            len(examples), n_requested, result["budget"]["n_gradient_evals"],
                            n_requested - len(examples))
        return result

    def _log(self, result: dict, started: float) -> None:
        method, n = self.method, result["n_examples"]
        logger.info("attributed %d examples with %s in %.1f s (prompt share %.3f)", n,
                    method.name.value, time.perf_counter() - started, result["prompt_share"])
        delta = result["max_convergence_delta"]
        adaptive = isinstance(method, IntegratedGradients) and method.adaptive
        if adaptive and result["n_not_converged"]:
            logger.warning("integrated gradients: %d of %d examples did not reach the "
                           "completeness tolerance %.3g within %d gradient evaluations (max "
                           "|delta| %.3f)", result["n_not_converged"], n,
                           float(method.delta_tolerance), int(method.max_gradient_evals), delta)
        elif not adaptive and delta is not None:  # fixed-step integrated gradients
            _warn_if_coarse(delta, method.n_steps)


def _warn_if_coarse(max_delta: float | None, n_steps) -> None:
    """Log a warning when the max |convergence delta| exceeds :data:`CONVERGENCE_WARNING`."""
    if max_delta is not None and max_delta > CONVERGENCE_WARNING:
        logger.warning("integrated gradients: max |convergence delta| %.3f exceeds %.2f; the "
                       "integral is coarse, raise n_steps (now %s)", max_delta,
                       CONVERGENCE_WARNING, n_steps)


def _batch_examples(prompted: PromptedModel, method: _Method, batch: EncodedBatch,
                    out: BatchAttribution, target_ids: torch.Tensor,
                    probabilities: torch.Tensor) -> list[dict]:
    """The example entries (less ``text``) of one batch, in its row order.

    ``target_ids`` and ``probabilities`` are ``(batch,)``: the explained label and its
    probability.
    """
    tokenizer = prompted.tokenizer
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    lengths = batch.attention_mask.sum(dim=1).tolist()
    prompt = out.prompt.double().cpu().numpy()
    per_token = None if out.inputs is None else out.inputs.double().cpu().numpy()
    input_total = out.input_total.double().cpu().numpy()
    deltas = None if out.delta is None else out.delta.double().cpu().numpy()
    fixed_steps = isinstance(method, IntegratedGradients) and not method.adaptive
    examples = []
    for row, length in enumerate(lengths):
        ids = batch.input_ids[row, :length].tolist()
        tokens = tokenizer.convert_ids_to_tokens(ids)
        values = None if per_token is None else per_token[row, :length]
        target = int(target_ids[row])
        example = {
            "target": target,
            "target_label": prompted.labels[target],
            "target_probability": float(probabilities[row].double()),
            "tokens": list(tokens),
            "prompt_attributions": [float(v) for v in prompt[row]],
            "token_attributions": None if values is None else [float(v) for v in values],
            "input_attribution": float(input_total[row] if values is None else values.sum()),
            "convergence_delta": None if deltas is None else float(deltas[row]),
            "top_tokens": [] if values is None else [
                {"token": tokens[j], "attribution": float(values[j])}
                for j in sorted((j for j, tid in enumerate(ids) if tid not in special),
                                key=lambda j: -abs(values[j]))[:TOP_TOKENS]],
        }
        if fixed_steps:
            example.update({"n_steps": int(method.n_steps),
                            "converged": bool(abs(deltas[row]) <= float(method.delta_tolerance)),
                            "position_error": None})
        elif out.n_steps is not None:
            example.update({"n_steps": int(out.n_steps[row]), "converged": bool(out.converged[row]),
                            "position_error": float(out.position_error[row].double())})
        examples.append(example)
    return examples


def summarise_examples(examples: Sequence[Mapping]) -> dict:
    """The run-level summary of per-example attributions (:class:`PromptAttributor` and
    :func:`merge_attributions` alike).

    Parameters
    ----------
    examples : sequence of mapping
        ``attribution.examples`` entries (``prompt_attributions`` ``(P,)``).

    Returns
    -------
    dict
        ``n_examples``, ``prompt_share``, ``per_position``, ``per_position_abs``,
        ``max_convergence_delta`` and ``by_group`` (None).
    """
    n = len(examples)
    prompt_attr = np.array([e["prompt_attributions"] for e in examples], dtype=np.float64)
    abs_prompt = np.abs(prompt_attr).sum(axis=1)
    abs_input = np.array([
        np.abs(np.asarray(e["token_attributions"], dtype=np.float64)).sum()
        if e["token_attributions"] is not None else abs(e["input_attribution"])
        for e in examples
    ])
    denominator = abs_prompt + abs_input
    shares = np.divide(abs_prompt, denominator, out=np.zeros(n), where=denominator > 0)
    deltas = [e["convergence_delta"] for e in examples]
    max_delta = (float(np.abs(np.array([np.nan if d is None else d for d in deltas])).max())
                 if any(d is not None for d in deltas) else None)
    return {
        "n_examples": n,
        "prompt_share": float(shares.mean()),
        "per_position": [float(v) for v in prompt_attr.mean(axis=0)],
        "per_position_abs": [float(v) for v in np.abs(prompt_attr).mean(axis=0)],
        "max_convergence_delta": max_delta,
        "by_group": None,
    }


# ------------------------------------------------------------ group summaries
def summarise_groups(attribution: Mapping, sensitive_features, *,
                     min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
                     true_labels: Sequence[str] | None = None,
                     n_bootstrap: int = GROUP_BOOTSTRAP, confidence: float = 0.95,
                     seed: int = 0) -> dict:
    """Per-group attribution of an ``attribution`` object, compared like for like.

    Parameters
    ----------
    attribution : mapping
        What :meth:`PromptAttributor.attribute` returns (``n_examples`` examples).
    sensitive_features : pandas.DataFrame, Series or mapping
        ``(n_examples, n_features)``, one row per attributed example, in order.
    min_group_size : int
        Smaller groups are listed but left out of gaps (as in fairness).
    true_labels : sequence of str, optional
        ``(n_examples,)``: compare groups within the same true label; None: within the
        same predicted label when the target is predicted, else on all rows.
    n_bootstrap, confidence, seed
        The bootstrap of the like-for-like differences.

    Returns
    -------
    dict
        The ``by_group`` object (:func:`group_attribution`).

    Raises
    ------
    InputError
        ``min_group_size`` below 1; sensitive features whose rows do not match.
    """
    _check_int(min_group_size, MIN_GROUP_SIZE_MESSAGE)
    examples = attribution["examples"]
    groups = _sensitive_frame(sensitive_features, len(examples))
    if true_labels is not None:
        strata, condition = list(true_labels), "true_label"
    elif attribution.get("target_policy") == "predicted":
        strata = [e.get("target_label", e["target"]) for e in examples]
        condition = "predicted_label"
    else:
        strata, condition = None, None
    return group_attribution(
        np.array([e["prompt_attributions"] for e in examples], dtype=np.float64), groups,
        min_group_size=int(min_group_size), error_scale=attribution.get("max_convergence_delta"),
        strata=strata, condition=condition, n_bootstrap=n_bootstrap, confidence=confidence,
        seed=int(seed))


def _group_keys(column: pd.Series) -> list[str]:
    return [MISSING_GROUP if pd.isna(v) else str(v) for v in column.tolist()]


def group_attribution(prompt_attr: np.ndarray, groups: pd.DataFrame, *,
                      min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
                      error_scale: float | None = None,
                      strata: Sequence | None = None,
                      condition: str | None = None,
                      n_bootstrap: int = GROUP_BOOTSTRAP,
                      confidence: float = 0.95,
                      seed: int = 0) -> dict:
    """Mean attribution per virtual token per group of every sensitive feature.

    Parameters
    ----------
    prompt_attr : numpy.ndarray
        ``(n_examples, num_virtual_tokens)``.
    groups : pandas.DataFrame
        ``(n_examples, n_features)``.
    min_group_size : int
        Smaller groups are listed but left out of ``max_difference`` and ``top_positions``.
    error_scale : float, optional
        The largest absolute completeness error (integrated gradients): gaps no larger
        are ``within_error``.
    strata : sequence, optional
        ``(n_examples,)`` the label each example is compared on
        (:func:`like_for_like_differences`); None: one stratum.
    condition : str, optional
        What ``strata`` holds, recorded (``"predicted_label"``, ``"true_label"``).
    n_bootstrap, confidence, seed
        The bootstrap of the like-for-like differences.

    Returns
    -------
    dict
        ``{feature: by_group entry}`` (docs/result-json.md#attribution).
    """
    out = {}
    for feature in groups.columns:
        keys = np.array(_group_keys(groups[feature]), dtype=object)
        names = sorted(set(keys.tolist()))
        counts = {g: int((keys == g).sum()) for g in names}
        means = {g: prompt_attr[keys == g].mean(axis=0) for g in names}
        small = [g for g in names if counts[g] < min_group_size]
        compared = [g for g in names if counts[g] >= min_group_size]
        spread = within = None
        top: list[int] = []
        if len(compared) >= 2:
            stacked = np.stack([means[g] for g in compared])
            spread = stacked.max(axis=0) - stacked.min(axis=0)
            top = [int(p) for p in np.argsort(-spread, kind="stable")[:TOP_POSITIONS]]
            if error_scale is not None:
                within = [bool(v <= error_scale) for v in spread]
        out[str(feature)] = {
            "groups": {g: [float(v) for v in means[g]] for g in names},
            "counts": counts,
            "small_groups": small,
            "min_group_size": int(min_group_size),
            "max_difference": None if spread is None else [float(v) for v in spread],
            "within_error": within,
            "error_scale": None if error_scale is None else float(error_scale),
            "top_positions": top,
            "like_for_like": like_for_like_differences(
                prompt_attr, keys, strata, min_group_size=min_group_size,
                error_scale=error_scale, condition=condition, n_bootstrap=n_bootstrap,
                confidence=confidence, seed=seed),
        }
    return out


def like_for_like_differences(prompt_attr: np.ndarray, keys: Sequence, strata: Sequence | None,
                              *, min_group_size: int = DEFAULT_MIN_GROUP_SIZE,
                              error_scale: float | None = None, condition: str | None = None,
                              n_bootstrap: int = GROUP_BOOTSTRAP, confidence: float = 0.95,
                              seed: int = 0) -> dict:
    """Per-position attribution difference of each group from the reference group, like for like.

    Attributions change sign with the explained label, so each group is compared with the
    reference (the largest eligible group; ties by name) within each stratum (label) where
    both have :data:`MIN_STRATUM_ROWS` examples, as :data:`LIKE_FOR_LIKE_RULE` says.

    Parameters
    ----------
    prompt_attr : numpy.ndarray
        ``(n_examples, num_virtual_tokens)``.
    keys : sequence
        ``(n_examples,)`` group of each example.
    strata : sequence or None
        ``(n_examples,)`` the label each example is compared on; None: one stratum.

    Returns
    -------
    dict
        ``by_group[feature].like_for_like`` (docs/result-json.md#attribution), with
        ``comparisons[i].difference`` ``(P,)`` and ``interval`` ``(P, 2)``.
    """
    keys = np.asarray(keys, dtype=object)
    n, n_positions = prompt_attr.shape if prompt_attr.ndim == 2 else (len(keys), 0)
    labels = (np.zeros(n, dtype=object) if strata is None
              else np.asarray([str(v) for v in strata], dtype=object))
    names = sorted(set(keys.tolist()))
    counts = {g: int((keys == g).sum()) for g in names}
    eligible = sorted((g for g in names if counts[g] >= min_group_size),
                      key=lambda g: (-counts[g], g))
    out: dict = {
        "condition": condition if strata is not None else None,
        "reference_group": eligible[0] if eligible else None,
        "n_bootstrap": int(n_bootstrap),
        "confidence": float(confidence),
        "seed": int(seed),
        "error_scale": None if error_scale is None else float(error_scale),
        "rule": LIKE_FOR_LIKE_RULE,
        "comparisons": [],
        "top_positions": [],
    }
    small = [g for g in names if counts[g] < min_group_size]
    if len(eligible) >= 2 and n_positions > 0:
        rng = np.random.default_rng(seed)
        found = []
        for group in eligible[1:]:
            entry, evident = _compare_with_reference(
                prompt_attr, keys == group, keys == eligible[0], labels, rng,
                n_bootstrap=n_bootstrap, confidence=confidence, error_scale=error_scale)
            out["comparisons"].append({"group": group, "reference": eligible[0], **entry})
            found += [(abs(d), p, group, d, i) for p, d, i in evident]
        found.sort(key=lambda t: (-t[0], t[1], t[2]))
        out["top_positions"] = [{"position": int(p), "group": g, "difference": d, "interval": i}
                                for _, p, g, d, i in found[:TOP_POSITIONS]]
    out["statement"] = like_for_like_statement(out, small=small, min_group_size=min_group_size)
    return out


def _compare_with_reference(prompt_attr: np.ndarray, in_group: np.ndarray,
                            in_reference: np.ndarray, labels: np.ndarray,
                            rng: np.random.Generator, *, n_bootstrap: int, confidence: float,
                            error_scale: float | None) -> tuple[dict, list]:
    """One group against the reference, stratum by stratum (:func:`like_for_like_differences`).

    Returns
    -------
    entry : dict
        ``{"strata", "n_group", "n_reference", "difference", "interval", "evidence"}``.
    evident : list of (int, float, [float, float])
        ``(position, difference, interval)`` of every position with evidence.
    """
    used, weights, diffs, boots = [], [], [], []
    n_group = n_reference = 0
    for stratum in sorted(set(labels.tolist())):
        in_g = in_group & (labels == stratum)
        in_r = in_reference & (labels == stratum)
        n_g, n_r = int(in_g.sum()), int(in_r.sum())
        if n_g < MIN_STRATUM_ROWS or n_r < MIN_STRATUM_ROWS:
            continue
        mean_g, boot_g = block_resampled_means(prompt_attr[in_g], n_bootstrap, rng)
        mean_r, boot_r = block_resampled_means(prompt_attr[in_r], n_bootstrap, rng)
        used.append(str(stratum))
        weights.append(n_g * n_r / (n_g + n_r))
        diffs.append(mean_g - mean_r)
        boots.append(boot_g - boot_r)
        n_group += n_g
        n_reference += n_r
    entry: dict = {"strata": used, "n_group": n_group, "n_reference": n_reference,
                   "difference": None, "interval": None, "evidence": None}
    if not used:
        return entry, []
    w = np.asarray(weights) / np.sum(weights)
    difference = np.tensordot(w, np.stack(diffs), axes=1)
    boot = np.tensordot(w, np.stack(boots), axes=1)  # (n_bootstrap, P)
    low, high = percentile_interval(boot, confidence, axis=0)
    # an interval within rounding of 0 (identical rows) contains 0
    evidence = (low > _ZERO_TOLERANCE) | (high < -_ZERO_TOLERANCE)
    if error_scale is not None:
        evidence &= np.abs(difference) > error_scale
    entry.update({
        "difference": [float(v) for v in difference],
        "interval": [[float(a), float(b)] for a, b in zip(low, high, strict=True)],
        "evidence": [bool(v) for v in evidence],
    })
    return entry, [(int(p), float(difference[p]), [float(low[p]), float(high[p])])
                   for p in np.flatnonzero(evidence)]


_CONDITION_WORDS = {"predicted_label": "the same predicted label",
                    "true_label": "the same true label"}


def like_for_like_statement(block: Mapping, *, small: Sequence[str] = (),
                            min_group_size: int = DEFAULT_MIN_GROUP_SIZE) -> str:
    """The sentence naming the positions that differ between groups, with its caveats.

    Parameters
    ----------
    block : mapping
        A :func:`like_for_like_differences` result.
    small : sequence of str
        Groups left out for having fewer than ``min_group_size`` examples.
    """
    left_out = (f" Groups with fewer than {min_group_size} attributed examples are not "
                f"compared: {', '.join(str(g) for g in small)}." if small else "")
    if not block.get("comparisons"):
        return ("No group comparison: fewer than two groups have at least "
                f"{min_group_size} attributed examples, so no difference between groups can "
                "be claimed." + left_out)
    condition = _CONDITION_WORDS.get(str(block.get("condition")),
                                     "all rows together (no conditioning on the label)")
    error = block.get("error_scale")
    error_words = (f" or the difference is within the integration error (±{error:.3g})"
                   if error is not None else "")
    level = f"{float(block.get('confidence', 0.95)):.0%}"
    head = (f"Compared like for like, on rows with {condition}, each group against "
            f"{block['reference_group']} ({level} bootstrap intervals, "
            f"{block['n_bootstrap']} resamples): ")
    top = block.get("top_positions") or []
    if not top:
        body = ("no position shows evidence of a difference between groups (every interval "
                f"contains 0{error_words}); the group curves differ by chance as far as these "
                "rows can tell.")
    else:
        named = "; ".join(
            f"position {t['position']} ({t['group']} minus {block['reference_group']} "
            f"{t['difference']:+.3g}, interval {t['interval'][0]:+.3g} to "
            f"{t['interval'][1]:+.3g})" for t in top)
        body = (f"the positions that differ most between groups, with evidence of a "
                f"difference, are {named}. Every other position shows no evidence of a "
                f"difference (its interval contains 0{error_words}). A difference in "
                "attribution says the prompt position acts differently on the groups' rows, "
                "not that it causes a difference in decisions.")
    return head + body + left_out


def convergence_summary(examples: Sequence[Mapping], *, delta_tolerance: float | None,
                        max_gradient_evals: int | None = None) -> dict:
    """Run-level convergence figures of integrated gradients from its examples.

    Parameters
    ----------
    examples : sequence of mapping
        The result's ``examples`` (``n_steps``, ``converged`` when present).
    delta_tolerance : float or None
        None for methods without completeness tolerance: every figure is None.
    max_gradient_evals : int, optional
        The adaptive cap (None with fixed steps).

    Returns
    -------
    dict
        ``{"delta_tolerance", "n_not_converged", "n_gradient_evals", "max_gradient_evals"}``.
    """
    if delta_tolerance is None:
        return {"delta_tolerance": None, "n_not_converged": None, "n_gradient_evals": None,
                "max_gradient_evals": None}
    return {
        "delta_tolerance": float(delta_tolerance),
        "n_not_converged": sum(1 for e in examples if e.get("converged") is False),
        "n_gradient_evals": int(sum(int(e.get("n_steps") or 0) for e in examples)),
        "max_gradient_evals": None if max_gradient_evals is None else int(max_gradient_evals),
    }


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
        What :meth:`PromptAttributor.attribute` returns (or the result's ``attribution``).

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
    if a.get("delta_tolerance") is not None and a.get("n_not_converged") is not None:
        failed = a["n_not_converged"]
        position = a.get("position_tolerance")
        within = "every example within it" if position is None else "every example within both"
        verdict = (within if not failed
                   else f"{failed} of {a['n_examples']} examples NOT converged (attributions "
                        "do not add up, or their positions may be off; read them with care)")
        scope = "" if position is None else f" (per-position {position:g})"
        lines.append(f"Completeness tolerance {a['delta_tolerance']:g}{scope}: {verdict}; "
                     f"{a.get('n_gradient_evals')} gradient evaluations")
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
        if info["top_positions"] and info.get("max_difference") is not None:
            p = info["top_positions"][0]
            gap = f"largest group gap {info['max_difference'][p]:.4f} at v{p}"
            if (info.get("within_error") or [False] * (p + 1))[p]:
                gap += " (within the integration error, not a finding)"
        elif info.get("max_difference") is None and "small_groups" in info:
            gap = (f"no gap: fewer than two groups with at least {info['min_group_size']} "
                   "examples")
        else:
            gap = "no positions"
        if info.get("small_groups"):
            gap += (f"; small groups (n < {info['min_group_size']}, left out of gaps): "
                    + ", ".join(info["small_groups"]))
        lines.append(f"By group {feature}: {gap}; groups: {counts}")
    return "\n".join(lines)


# ------------------------------------------------------------------- merging
def merge_attributions(pieces: Sequence[tuple[Sequence[int], dict]], *, n_examples: int,
                       seed: int = 0) -> dict:
    """One ``attribution`` object from :meth:`PromptAttributor.attribute` results over
    disjoint rows (a multi-process audit's batches): the examples put at their rows and the
    summaries recomputed (:func:`summarise_examples`), so merging the batches of one call's
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
    first = pieces[0][1]
    merged = {**first, **summarise_examples(examples), "seed": int(seed), "examples": examples,
              **convergence_summary(examples, delta_tolerance=first.get("delta_tolerance"),
                                    max_gradient_evals=first.get("max_gradient_evals"))}
    _warn_if_coarse(merged["max_convergence_delta"], merged.get("n_steps"))
    return merged

