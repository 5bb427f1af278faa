"""What to compress and how: the one options object that every entry point validates first."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .methods import (
    DEFAULT_PRUNE_METHOD, DEFAULT_QUANT_METHOD, GRANULARITIES, PRUNE_METHODS, PRUNE_PATTERNS, QUANT_METHODS, Method,
)

SCOPES = ("global", "layer")
SCHEMES = ("symmetric", "asymmetric")
QUANTIZED_BITS = (2, 3, 4, 5, 6, 7, 8)
UNQUANTIZED_BITS = (16, 32)
SEMI_STRUCTURED_SPARSITY = {"2:4": 0.5}  # 2 of every 4 consecutive weights pruned
# Options that specs written by earlier versions lack; their defaults are what those specs meant.
ADDED_OPTIONS = ("prune_method", "prune_pattern", "quant_method", "group_size")


def raise_problems(subject: str, problems: list[str]) -> None:
    """One ValueError that lists every problem, so a caller fixes a config in one round trip."""
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ValueError(f"invalid {subject} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{listing}")


def fitted(table: dict[str, Method], name: str) -> bool:
    """Whether the method of that name is fitted to calibration data (an unknown name is a problem of its own)."""
    return name in table and table[name].calibrated


def choice_problem(option: str, value: Any, allowed: tuple) -> str | None:
    if value in allowed and type(value) in {type(a) for a in allowed}:
        return None
    return f"{option}={value!r}: allowed values are {', '.join(repr(a) for a in allowed)}"


def fraction_problem(option: str, value: Any, *, upper_open: bool = True) -> str | None:
    """None when value is a real number in [0, 1) (or [0, 1] with upper_open=False)."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if is_number and math.isfinite(value) and 0 <= value and (value < 1 if upper_open else value <= 1):
        return None
    return f"{option}={value!r}: must be a number in [0, {'1)' if upper_open else '1]'}"


def group_size_problem(granularity: Any, group_size: Any, granularity_option: str = "granularity",
                       group_size_option: str = "group_size") -> str | None:
    """None when group_size is the width of a quantization group (an integer >= 1) for granularity
    'group', or 0 (unset) for any other granularity."""
    is_integer = isinstance(group_size, int) and not isinstance(group_size, bool)
    if granularity == "group":
        if is_integer and group_size >= 1:
            return None
        return f"{granularity_option} 'group' needs {group_size_option} >= 1, an integer (got {group_size!r})"
    if is_integer and group_size == 0:
        return None
    return (f"{group_size_option} {group_size!r} applies only to {granularity_option} 'group' "
            f"(got {granularity_option} {granularity!r}); 0 leaves it unset")


@dataclass(frozen=True)
class CompressionSpec:
    sparsity: float = 0.0
    scope: str = "global"
    prune_embeddings: bool = False
    bits: int = 32
    scheme: str = "symmetric"
    granularity: str = "channel"
    quantize_embeddings: bool = True  # on by default: embeddings dominate the bytes of small models
    prune_method: str = DEFAULT_PRUNE_METHOD
    prune_pattern: str = PRUNE_PATTERNS[0]
    quant_method: str = DEFAULT_QUANT_METHOD
    group_size: int = 0  # columns per quantization group; only with granularity "group"

    @property
    def prunes(self) -> bool:
        return self.sparsity > 0

    @property
    def quantizes(self) -> bool:
        return self.bits in QUANTIZED_BITS

    @property
    def enabled(self) -> bool:
        return self.prunes or self.quantizes

    @property
    def masks_calibrated(self) -> bool:
        """Whether pruning masks must come from the calibrated compressor: a method fitted to data, or the 2:4
        pattern (which the calibrated compressor applies, by magnitude too); else magnitude masks of the weights."""
        return fitted(PRUNE_METHODS, self.prune_method) or self.prune_pattern != PRUNE_PATTERNS[0]

    @property
    def calibrated(self) -> bool:
        """Whether the masks or the weights must come from a calibrated compressor: everything but
        unstructured magnitude pruning and round-to-nearest quantization, which need only the weights."""
        return (self.prunes and self.masks_calibrated) or (self.quantizes and fitted(QUANT_METHODS, self.quant_method))

    @property
    def needs_calibration_data(self) -> bool:
        """Whether any weight is fitted to inputs (a calibrated method); magnitude 2:4 alone needs none."""
        return ((self.prunes and fitted(PRUNE_METHODS, self.prune_method))
                or (self.quantizes and fitted(QUANT_METHODS, self.quant_method)))

    def problems(self, option_names: dict[str, str] | None = None) -> list[str]:
        """Every problem of the spec, each naming its options. option_names renames them (a front end
        passes its own spelling, e.g. {"bits": "--quant-bits"}) so that the checks live here only."""
        name = {f.name: f.name for f in fields(self)} | (option_names or {})
        found = [
            fraction_problem(name["sparsity"], self.sparsity),
            choice_problem(name["scope"], self.scope, SCOPES),
            choice_problem(name["bits"], self.bits, QUANTIZED_BITS + UNQUANTIZED_BITS),
            choice_problem(name["scheme"], self.scheme, SCHEMES),
            choice_problem(name["granularity"], self.granularity, GRANULARITIES),
            choice_problem(name["prune_embeddings"], self.prune_embeddings, (False, True)),
            choice_problem(name["quantize_embeddings"], self.quantize_embeddings, (False, True)),
            choice_problem(name["prune_method"], self.prune_method, tuple(PRUNE_METHODS)),
            choice_problem(name["prune_pattern"], self.prune_pattern, PRUNE_PATTERNS),
            choice_problem(name["quant_method"], self.quant_method, tuple(QUANT_METHODS)),
            group_size_problem(self.granularity, self.group_size, name["granularity"], name["group_size"]),
        ]
        for pattern, pattern_sparsity in SEMI_STRUCTURED_SPARSITY.items():
            if self.prune_pattern == pattern and self.sparsity != pattern_sparsity:
                found.append(f"{name['prune_pattern']} {pattern!r} needs {name['sparsity']} {pattern_sparsity} "
                             f"(got {self.sparsity!r})")
        if fitted(QUANT_METHODS, self.quant_method) and self.bits not in QUANTIZED_BITS:
            bits_range = f"{QUANTIZED_BITS[0]}..{QUANTIZED_BITS[-1]}"
            found.append(f"{name['quant_method']} {self.quant_method!r} needs {name['bits']} {bits_range} "
                         f"(got {self.bits!r})")
        prune_method, quant_method = PRUNE_METHODS.get(self.prune_method), QUANT_METHODS.get(self.quant_method)
        if prune_method and self.prune_pattern in PRUNE_PATTERNS and self.prune_pattern not in prune_method.patterns:
            found.append(f"{name['prune_method']} {self.prune_method!r} supports {name['prune_pattern']} "
                         f"{', '.join(map(repr, prune_method.patterns))} (got {self.prune_pattern!r})")
        if (quant_method and self.granularity in GRANULARITIES
                and self.granularity not in quant_method.granularities):
            found.append(f"{name['quant_method']} {self.quant_method!r} supports {name['granularity']} "
                         f"{', '.join(map(repr, quant_method.granularities))} (got {self.granularity!r})")
        return [problem for problem in found if problem]

    def validate(self) -> None:
        raise_problems("compression spec", self.problems())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompressionSpec:
        """The inverse of to_dict, validated: unknown or missing keys are problems too, except that
        the options added after the first files were written take their defaults when absent."""
        if not isinstance(values, dict):
            raise ValueError(f"invalid compression spec: expected a dict, got {type(values).__name__}")
        names = [f.name for f in fields(cls)]
        problems = [f"unknown option {key!r}: allowed options are {', '.join(names)}" for key in values if key not in names]
        problems += [f"missing option {name!r}" for name in names if name not in values and name not in ADDED_OPTIONS]
        raise_problems("compression spec", problems)
        spec = cls(**values)
        spec.validate()
        return spec
