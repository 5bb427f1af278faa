"""Sparsity as a pure function of the update number, so a resumed run prunes exactly as an
uninterrupted one would: nothing about a schedule lives anywhere but in its arguments.

All schedules return 0 before `start` (no pruning yet) and only change on updates
start, start + every, start + 2 * every, ...
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .spec import choice_problem, fraction_problem, raise_problems

SCHEDULES = ("oneshot", "iterative", "gradual")


def schedule_problems(
    *, schedule: str, target: float, start: int = 0, end: int = 0, every: int = 1, fraction: float = 0.0,
    initial: float = 0.0,
) -> list[str]:
    problems = [choice_problem("schedule", schedule, SCHEDULES), fraction_problem("target", target)]
    for option, value in (("start", start), ("end", end), ("every", every)):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{option}={value!r}: must be an integer")
    if isinstance(start, int) and start < 0:
        problems.append(f"start={start}: must be >= 0")
    if isinstance(every, int) and every < 1:
        problems.append(f"every={every}: must be >= 1")
    if schedule == "iterative" and (fraction_problem("fraction", fraction) or fraction == 0):
        problems.append(f"fraction={fraction!r}: the iterative schedule prunes a number in (0, 1) of the remaining weights")
    if schedule == "gradual":
        problems.append(fraction_problem("initial", initial))
        if isinstance(start, int) and isinstance(end, int) and end <= start:
            problems.append(f"end={end}, start={start}: the gradual schedule needs end > start")
        if not fraction_problem("initial", initial) and not fraction_problem("target", target) and initial > target:
            problems.append(f"initial={initial!r} > target={target!r}: sparsity only grows")
    return [p for p in problems if p]


def validate_schedule(**options) -> None:
    raise_problems("pruning schedule", schedule_problems(**options))


@dataclass(frozen=True)
class PruningSchedule:
    """A pruning schedule, validated once when it is made; sparsity_at then only computes."""

    schedule: str = "oneshot"
    target: float = 0.0
    start: int = 0
    end: int = 0
    every: int = 1
    fraction: float = 0.0
    initial: float = 0.0

    def __post_init__(self):
        validate_schedule(**asdict(self))

    def sparsity_at(self, update: int) -> float:
        """oneshot: target from `start` on. iterative: on each of the updates start, start+every, ... prune
        `fraction` of the remaining weights, capped at target. gradual (Zhu & Gupta 2017): the cubic
        s = target + (initial - target) * (1 - (t - start) / (end - start))**3 between start and end,
        then target."""
        target = float(self.target)  # a sparsity is a float, also when the target was given as the integer 0
        if update < self.start:
            return 0.0
        # The update at which the sparsity now in force was set.
        last_step = self.start + (update - self.start) // self.every * self.every
        if self.schedule == "oneshot":
            return target
        if self.schedule == "iterative":
            steps = (last_step - self.start) // self.every + 1
            return min(target, 1.0 - math.pow(1.0 - self.fraction, steps))
        if update >= self.end:
            return target
        remaining = 1.0 - (last_step - self.start) / (self.end - self.start)
        # initial + (target - initial) * (1 - remaining**3) is exactly `initial` at start.
        return self.initial + (target - self.initial) * (1.0 - remaining**3)


def sparsity_at(update: int, **options) -> float:
    """PruningSchedule(**options).sparsity_at(update), for a single value."""
    return PruningSchedule(**options).sparsity_at(update)
