"""What to compress and how: the one options object that every entry point validates first."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

SCOPES = ("global", "layer")
SCHEMES = ("symmetric", "asymmetric")
GRANULARITIES = ("channel", "tensor")
QUANTIZED_BITS = (2, 3, 4, 5, 6, 7, 8)
UNQUANTIZED_BITS = (16, 32)


def raise_problems(subject: str, problems: list[str]) -> None:
    """One ValueError that lists every problem, so a caller fixes a config in one round trip."""
    if problems:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ValueError(f"invalid {subject} ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{listing}")


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


@dataclass(frozen=True)
class CompressionSpec:
    sparsity: float = 0.0
    scope: str = "global"
    prune_embeddings: bool = False
    bits: int = 32
    scheme: str = "symmetric"
    granularity: str = "channel"
    quantize_embeddings: bool = True  # on by default: embeddings dominate the bytes of small models

    @property
    def prunes(self) -> bool:
        return self.sparsity > 0

    @property
    def quantizes(self) -> bool:
        return self.bits in QUANTIZED_BITS

    @property
    def enabled(self) -> bool:
        return self.prunes or self.quantizes

    def problems(self) -> list[str]:
        found = [
            fraction_problem("sparsity", self.sparsity),
            choice_problem("scope", self.scope, SCOPES),
            choice_problem("bits", self.bits, QUANTIZED_BITS + UNQUANTIZED_BITS),
            choice_problem("scheme", self.scheme, SCHEMES),
            choice_problem("granularity", self.granularity, GRANULARITIES),
            choice_problem("prune_embeddings", self.prune_embeddings, (False, True)),
            choice_problem("quantize_embeddings", self.quantize_embeddings, (False, True)),
        ]
        return [problem for problem in found if problem]

    def validate(self) -> None:
        raise_problems("compression spec", self.problems())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CompressionSpec:
        """The inverse of to_dict, validated: unknown or missing keys are problems too."""
        if not isinstance(values, dict):
            raise ValueError(f"invalid compression spec: expected a dict, got {type(values).__name__}")
        names = [f.name for f in fields(cls)]
        problems = [f"unknown option {key!r}: allowed options are {', '.join(names)}" for key in values if key not in names]
        problems += [f"missing option {name!r}" for name in names if name not in values]
        raise_problems("compression spec", problems)
        spec = cls(**values)
        spec.validate()
        return spec
