"""The capability vocabulary: what a component may promise (``provides``) or need
(``requires``), each name with its meaning.

A plugin's capabilities are validated when it loads (:func:`validate_declaration`):
``provides`` is a set of known names of the plugin's own kind (a sampler cannot promise what
only a degradation can keep), ``requires`` maps known kinds to sets of known names of that
kind; a string where a set belongs, an unknown kind or an unknown name, or a name of another
kind is an error naming the plugin.
The recipe loader then refuses a combination whose requirements are not met.

Third-party packages may add names with :func:`define` (call it at import time of the module
that holds the plugin, before the class is loaded by the registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corediff.errors import PluginError, did_you_mean
from corediff.kinds import BY_NAME


@dataclass(frozen=True)
class Capability:
    """A name in the vocabulary: the kind that provides it and what it promises."""

    name: str
    kind: str
    meaning: str


_VOCABULARY: dict[str, Capability] = {}


def define(name: str, kind: str, meaning: str) -> Capability:
    """Add a capability name (idempotent for an identical definition)."""
    if kind not in BY_NAME:
        raise PluginError(f"capability '{name}': unknown kind '{kind}'")
    capability = Capability(name, kind, meaning)
    existing = _VOCABULARY.get(name)
    if existing is not None and existing != capability:
        raise PluginError(
            f"capability '{name}' is already defined for {existing.kind}: {existing.meaning}"
        )
    _VOCABULARY[name] = capability
    return capability


def vocabulary() -> dict[str, Capability]:
    """Every known capability, by name."""
    return dict(_VOCABULARY)


# -- schedules -----------------------------------------------------------------------------
define("alpha_bar", "schedule",
       "values() is ᾱ_t: float64, ᾱ_0 = 1, non-increasing in t, ᾱ_t in [0, 1].")
define("blur_sigma", "schedule",
       "values() is the total Gaussian blur width σ(t) in pixels, σ(0) = 0, non-decreasing.")
define("blur_composed", "schedule",
       "the blur at t is t per-step kernels applied in turn, of widths "
       "sqrt(σ(i)² − σ(i−1)²), so values() is their composed width sqrt(Σ σ_i²).")
define("rank", "schedule",
       "values() is the kept fraction of singular values at t: 1 at t = 0, non-increasing.")
define("flow", "schedule",
       "the straight path of flow matching: α_t = 1 − t, σ_t = t for t ∈ [0, 1]; values() is "
       "t on its grid of steps + 1 points (for previews).")
define("sigma", "schedule",
       "a noise-level range: config sigma_min, sigma_max (and rho for its Karras grid); "
       "values() is σ on a grid from 0 to sigma_max (for previews).")
# -- degradations --------------------------------------------------------------------------
define("gaussian", "degradation",
       "variance preserving: x_t = α_t·x0 + σ_t·ε with α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t), "
       "ᾱ = schedule.values(); sample_noise draws ε, estimate_noise inverts x_t for ε; the "
       "maths of corediff.maths.gaussian applies.")
define("gaussian_family", "degradation",
       "a member of the Gaussian family x_t = α(t)·x0 + σ(t)·ε: implements "
       "corediff.maths.family.GaussianFamily (alpha, sigma, lambda_, t_from_lambda, "
       "t_from_sigma, coefficients), so the family's samplers (euler, heun, dpmpp_2m, unipc) "
       "drive it.")
define("snr", "degradation", "snr(t) returns the signal-to-noise ratio α_t²/σ_t² (float64).")
define("continuous", "degradation",
       "degrade, estimate_noise (and snr where provided) take real times t in [0, t_max] as "
       "float64 tensors, not only integer steps (see corediff.interfaces).")
define("unit_time", "degradation", "continuous with t ∈ [0, 1] and t_max = 1.0.")
define("sigma_time", "degradation",
       "continuous with t = σ, the noise level: x_σ = x0 + σ·ε, t_max = σ_max, "
       "prior_std() = σ_max.")
define("stochastic", "degradation",
       "degrade uses noise: sample_noise returns a tensor, estimate_noise recovers it.")
define("deterministic", "degradation",
       "degrade ignores noise; sample_noise and estimate_noise return None.")
define("blur", "degradation", "D(x0, t) is a Gaussian blur of width schedule.values()[t].")
define("flow_path", "degradation",
       "the flow-matching interpolation x_t = (1 − t)·x0 + t·ε (rectified flow), t ∈ [0, 1].")
define("svd", "degradation",
       "D(x0, t) keeps the top singular values of each channel; implements the factor "
       "protocol (decompose, flip_factors, degrade_from_factors).")


def _names(value: Any, plugin: str, what: str) -> frozenset[str]:
    if isinstance(value, str | bytes) or not isinstance(
            value, set | frozenset | list | tuple) or not all(isinstance(n, str) for n in value):
        raise PluginError(
            f"{plugin}: {what} must be a set of capability names, "
            f"e.g. frozenset({{'gaussian'}}), not {type(value).__name__} {value!r}"
        )
    names = frozenset(value)
    for name in sorted(names):
        if name not in _VOCABULARY:
            raise PluginError(
                f"{plugin}: {what} names unknown capability '{name}'."
                f"{did_you_mean(str(name), _VOCABULARY)} Known: {', '.join(sorted(_VOCABULARY))}."
            )
    return names


def validate_provides(value: Any, plugin: str, kind: str) -> frozenset[str]:
    """``provides`` checked: a set of known capability names of the ``kind`` providing them."""
    names = _names(value, plugin, "provides")
    _own_kind(names, kind, plugin, "provides")
    return names


def _own_kind(names: frozenset[str], kind: str, plugin: str, what: str) -> None:
    """Refuse a capability name that another kind provides."""
    wrong = sorted(n for n in names if _VOCABULARY[n].kind != kind)
    if wrong:
        owner = _VOCABULARY[wrong[0]].kind
        raise PluginError(
            f"{plugin}: {what} names '{wrong[0]}', which a {owner} provides, not a {kind}."
        )


def validate_declaration(cls: type, plugin: str, kind: str) -> None:
    """Check the ``provides`` and ``requires`` of a plugin class of ``kind`` (raises
    PluginError)."""
    validate_provides(getattr(cls, "provides", frozenset()), plugin, kind)
    requires = getattr(cls, "requires", {})
    if not isinstance(requires, Mapping):
        raise PluginError(
            f"{plugin}: requires must map kinds to capability sets, "
            f"e.g. {{'degradation': frozenset({{'gaussian'}})}}, not {requires!r}"
        )
    for kind, needed in requires.items():
        if kind not in BY_NAME:
            raise PluginError(
                f"{plugin}: requires names unknown kind '{kind}'.{did_you_mean(str(kind), BY_NAME)}"
                f" Kinds: {', '.join(BY_NAME)}."
            )
        _own_kind(_names(needed, plugin, f"requires['{kind}']"), kind, plugin,
                  f"requires['{kind}']")
