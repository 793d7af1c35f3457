"""The model's ``AdaptiveSparsityScheduler`` (``original-model.md`` section 3.6).

Each :meth:`AdaptiveSparsityScheduler.step` advances the step counter and
returns the sparsity target and loss weight for that step. With
``p = min(1, step / warmup_steps)``, ``s0 = initial_sparsity``,
``s1 = final_sparsity`` and ``D = s1 - s0``:

=========== =============================================================
schedule    sparsity target
=========== =============================================================
"linear"    ``s0 + p * D``
"cosine"    ``s0 + 0.5 * D * (1 - cos(pi * p))``
"step"      ``s0`` if ``p < 0.25``; ``s0 + 0.33 D`` if ``p < 0.5``;
            ``s0 + 0.67 D`` if ``p < 0.75``; else ``s1``
=========== =============================================================

The loss weight is always linear, ``w0 + p * (w1 - w0)``, whatever the
schedule (as in the model). If ``accuracy_threshold`` is set and the value
passed as ``current_accuracy`` exceeds it, that step's target is multiplied
by 0.9 and its weight by 0.5. Despite its name, ``current_accuracy`` is a
*loss* (lower is better), as in the model; the adjustment applies to the
returned values of that call only.

Differences from the model (documented, deliberate):

* ``warmup_steps=0`` means "no warm-up": the progress is 1 from the first
  step (the model raises ``ZeroDivisionError``).
* The cosine uses ``math.pi`` in float64 (the model writes ``3.14159`` and
  evaluates the cosine in float32). The two agree to about 1e-6 of ``D``
  (at ``p = 1`` both give exactly ``s1``). ``compat=True`` reproduces the
  model's arithmetic (``3.14159``, float32 cosine) to float32 rounding.
* :meth:`state_dict` / :meth:`load_state_dict` let a schedule resume.
"""
from __future__ import annotations

import math

import numpy as np

from ._checks import check_int, check_real

__all__ = ["SCHEDULE_TYPES", "AdaptiveSparsityScheduler"]

#: Schedule types understood by :class:`AdaptiveSparsityScheduler`.
SCHEDULE_TYPES = ("linear", "cosine", "step")

_CONFIG_KEYS = ("initial_sparsity", "final_sparsity", "initial_weight", "final_weight",
                "warmup_steps", "schedule_type", "accuracy_threshold", "compat")
_STATE_KEYS = ("current_step", "best_accuracy")


class AdaptiveSparsityScheduler:
    """Warm-up schedule for the sparsity target and the sparsity-loss weight.

    Parameters
    ----------
    initial_sparsity, final_sparsity : float, default 0.2, 0.5
        Target sparsity at the start and at the end of the warm-up.
    initial_weight, final_weight : float, default 0.001, 0.01
        Sparsity-loss weight at the start and at the end of the warm-up.
    warmup_steps : int >= 0, default 1000
        Steps until the final values are reached (0: immediately).
    schedule_type : {"linear", "cosine", "step"}, default "cosine"
    accuracy_threshold : float or None, default None
        If set, a step whose ``current_accuracy`` (a loss) exceeds it gets
        its target scaled by 0.9 and its weight by 0.5.
    compat : bool, default False
        Evaluate the cosine as the model does (``3.14159``, float32).

    Attributes
    ----------
    current_step : int
        Number of :meth:`step` calls since construction or :meth:`reset`.
    best_accuracy : float
        Lowest ``current_accuracy`` seen (``inf`` if none). Tracked as in
        the model; the schedule does not use it.

    Raises
    ------
    TypeError
        Non-numeric arguments.
    ValueError
        Non-finite values, ``warmup_steps < 0`` or an unknown schedule.

    Examples
    --------
    >>> sched = AdaptiveSparsityScheduler(0.2, 0.5, warmup_steps=4, schedule_type="linear")
    >>> [round(sched.step()["sparsity_target"], 6) for _ in range(5)]
    [0.275, 0.35, 0.425, 0.5, 0.5]
    >>> sched.step(current_accuracy=None)["step"]
    6
    >>> state = sched.state_dict()
    >>> sched.reset(); sched.current_step
    0
    >>> sched.load_state_dict(state); sched.current_step
    6
    """

    def __init__(self, initial_sparsity=0.2, final_sparsity=0.5, initial_weight=0.001,
                 final_weight=0.01, warmup_steps=1000, schedule_type="cosine",
                 accuracy_threshold=None, *, compat=False):
        self.initial_sparsity = check_real("initial_sparsity", initial_sparsity)
        self.final_sparsity = check_real("final_sparsity", final_sparsity)
        self.initial_weight = check_real("initial_weight", initial_weight)
        self.final_weight = check_real("final_weight", final_weight)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        if schedule_type not in SCHEDULE_TYPES:
            raise ValueError(
                f"schedule_type={schedule_type!r} is not one of "
                f"{', '.join(map(repr, SCHEDULE_TYPES))}"
            )
        self.schedule_type = schedule_type
        self.accuracy_threshold = (None if accuracy_threshold is None
                                   else check_real("accuracy_threshold", accuracy_threshold))
        if not isinstance(compat, (bool, np.bool_)):
            raise TypeError(f"compat must be a bool, got {type(compat).__name__}")
        self.compat = bool(compat)
        self.current_step = 0
        self.best_accuracy = math.inf

    # ------------------------------------------------------------------
    def progress(self, step: int) -> float:
        """Warm-up progress ``min(1, step / warmup_steps)`` at ``step``.

        Examples
        --------
        >>> AdaptiveSparsityScheduler(warmup_steps=8).progress(2)
        0.25
        >>> AdaptiveSparsityScheduler(warmup_steps=0).progress(1)
        1.0
        """
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, step / self.warmup_steps)

    def _target(self, p: float) -> float:
        s0, s1 = self.initial_sparsity, self.final_sparsity
        delta = s1 - s0
        kind = self.schedule_type
        if kind == "linear":
            return s0 + p * delta
        if kind == "cosine":
            if self.compat:
                c = float(np.cos(np.float32(p * 3.14159)))
            else:
                c = math.cos(p * math.pi)
            return s0 + 0.5 * delta * (1.0 - c)
        # "step"
        if p < 0.25:
            return s0
        if p < 0.5:
            return s0 + 0.33 * delta
        if p < 0.75:
            return s0 + 0.67 * delta
        return s1

    def step(self, current_accuracy=None) -> dict:
        """Advance one step and return that step's schedule values.

        Parameters
        ----------
        current_accuracy : float or None
            A validation *loss* (lower is better), as in the model. Used only
            when ``accuracy_threshold`` is set.

        Returns
        -------
        dict
            ``sparsity_target`` (float), ``loss_weight`` (float),
            ``progress`` (float in [0, 1]) and ``step`` (int, from 1).
        """
        if current_accuracy is not None:
            current_accuracy = check_real("current_accuracy", current_accuracy)
        self.current_step += 1
        p = self.progress(self.current_step)
        target = self._target(p)
        weight = self.initial_weight + p * (self.final_weight - self.initial_weight)
        if current_accuracy is not None:
            self.best_accuracy = min(self.best_accuracy, current_accuracy)
            if self.accuracy_threshold is not None and current_accuracy > self.accuracy_threshold:
                target *= 0.9
                weight *= 0.5
        return {"sparsity_target": float(target), "loss_weight": float(weight),
                "progress": float(p), "step": self.current_step}

    def reset(self) -> None:
        """Back to step 0 with no best value (``inf``)."""
        self.current_step = 0
        self.best_accuracy = math.inf

    # ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Configuration and progress, as plain Python values (JSON-friendly).

        Returns
        -------
        dict
            The constructor arguments plus ``current_step`` and
            ``best_accuracy``.
        """
        out = {key: getattr(self, key) for key in _CONFIG_KEYS}
        out.update({key: getattr(self, key) for key in _STATE_KEYS})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned (configuration included).

        Raises
        ------
        TypeError
            ``state`` is not a mapping.
        ValueError
            Missing or unknown keys, or invalid values (the same checks as
            the constructor; ``current_step`` must be an int >= 0).
        """
        if not hasattr(state, "keys"):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        expected = set(_CONFIG_KEYS) | set(_STATE_KEYS)
        missing = sorted(expected - set(state))
        unknown = sorted(set(state) - expected)
        if missing or unknown:
            raise ValueError(f"state has missing keys {missing} and unknown keys {unknown}")
        fresh = AdaptiveSparsityScheduler(
            state["initial_sparsity"], state["final_sparsity"], state["initial_weight"],
            state["final_weight"], state["warmup_steps"], state["schedule_type"],
            state["accuracy_threshold"], compat=state["compat"],
        )
        step = check_int("current_step", state["current_step"], 0)
        best = float(state["best_accuracy"])
        if math.isnan(best):
            raise ValueError("best_accuracy must not be NaN")
        self.__dict__.update(fresh.__dict__)
        self.current_step = step
        self.best_accuracy = best

    def __repr__(self) -> str:
        return (f"AdaptiveSparsityScheduler({self.initial_sparsity!r}, {self.final_sparsity!r}, "
                f"{self.initial_weight!r}, {self.final_weight!r}, warmup_steps="
                f"{self.warmup_steps!r}, schedule_type={self.schedule_type!r}, "
                f"accuracy_threshold={self.accuracy_threshold!r}, compat={self.compat!r}; "
                f"step {self.current_step})")
