"""Sparsity losses, scheduler and statistics against the model's formulas.

Expected values are written out by hand or recomputed here with separate,
naive formulas (``original-model.md`` sections 3.4-3.6).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bknumba.sparsity import (
    AdaptiveSparsityScheduler,
    balanced_sparsity_loss,
    current_sparsity,
    sparsity_loss,
    sparsity_stats,
)


def naive_loss(zeros, total, t, kind):
    """The model's loss, written independently (Python floats)."""
    cs = zeros / total
    d = cs - t
    if kind == "l2":
        return d ** 2
    if kind == "l1":
        return abs(d)
    if kind == "adaptive":
        return 0.5 * d ** 2 if abs(d) < 0.1 else 0.1 * (abs(d) - 0.05)
    eps = 1e-8
    if not (eps < t < 1 - eps):
        return d ** 2
    c = min(max(cs, eps), 1 - eps)
    return t * math.log(t / c) + (1 - t) * math.log((1 - t) / (1 - c))


def mask_with_zeros(zeros, shape=(2, 64), seed=0):
    m = np.ones(int(np.prod(shape)))
    m[np.random.default_rng(seed).permutation(m.size)[:zeros]] = 0
    return m.reshape(shape)


# ----------------------------------------------------------------------------- losses
def test_loss_hand_values_38_of_128():
    # the model's test: 38 of 128 positions skipped, target 0.5; d = -0.203125
    mask = mask_with_zeros(38)
    assert current_sparsity(mask) == 0.296875
    assert sparsity_loss(mask, 0.5, "l2") == 0.041259765625
    assert sparsity_loss(mask, 0.5, "l1") == 0.203125
    assert sparsity_loss(mask, 0.5, "adaptive") == pytest.approx(0.0153125, abs=1e-17)
    kl = 0.5 * math.log(0.5 / 0.296875) + 0.5 * math.log(0.5 / 0.703125)
    assert sparsity_loss(mask, 0.5, "kl") == pytest.approx(kl, rel=1e-15)


def test_default_kind_is_l2_and_half_mask_is_below_model_threshold():
    mask = mask_with_zeros(64)                    # exactly 50 %
    assert sparsity_loss(mask) == 0.0
    assert sparsity_loss(np.ones((2, 64))) == 0.25  # (0 - 0.5)**2


@pytest.mark.parametrize("kind", ["l2", "l1", "kl", "adaptive"])
@pytest.mark.parametrize("zeros", [0, 1, 13, 64, 100, 128])
@pytest.mark.parametrize("target", [0.0, 1e-9, 0.2, 0.5, 0.9, 1.0])
def test_loss_matches_naive_formula(kind, zeros, target):
    mask = mask_with_zeros(zeros)
    expected = naive_loss(zeros, 128, target, kind)
    assert sparsity_loss(mask, target, kind) == pytest.approx(expected, rel=1e-14, abs=1e-300)


def test_kl_edge_targets_fall_back_to_l2():
    mask = mask_with_zeros(32)                    # sparsity 0.25
    assert sparsity_loss(mask, 0.0, "kl") == 0.0625
    assert sparsity_loss(mask, 1.0, "kl") == 0.5625
    # all masked: current sparsity 1, clipped to 1 - 1e-8 inside the KL
    allmasked = np.zeros((3, 5))
    c = 1 - 1e-8
    expect = 0.5 * math.log(0.5 / c) + 0.5 * math.log(0.5 / (1 - c))
    assert sparsity_loss(allmasked, 0.5, "kl") == pytest.approx(expect, rel=1e-14)
    assert 8.5 < expect < 8.6                     # finite (the float32 model gives inf)
    assert sparsity_loss(allmasked, 1.0, "kl") == 0.0
    assert sparsity_loss(allmasked, 1.0, "adaptive") == 0.0
    assert sparsity_loss(allmasked, 0.0, "adaptive") == pytest.approx(0.095, abs=1e-17)


def test_huber_branches_are_continuous_at_delta():
    # |d| = 0.1 exactly: 1 of 10 skipped against target 0.0 -> d = 0.1 (not < 0.1)
    mask = np.array([0] + [1] * 9)
    assert sparsity_loss(mask, 0.0, "adaptive") == pytest.approx(0.1 * (0.1 - 0.05), abs=1e-17)
    assert sparsity_loss(np.array([0] + [1] * 19), 0.0, "adaptive") == pytest.approx(
        0.5 * 0.05 ** 2, abs=1e-17)


def test_bool_and_soft_masks():
    b = np.array([[True, False, True, True]])
    assert sparsity_loss(b, 0.5, "l1") == 0.25
    soft = np.array([0.25, 0.75, 0.5, 0.5])       # mean 0.5
    assert current_sparsity(soft) == 0.5


def test_inputs_not_modified():
    mask = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    before = mask.copy()
    sparsity_loss(mask, 0.3, "kl")
    balanced_sparsity_loss(mask, 1.0)
    sparsity_stats(mask)
    np.testing.assert_array_equal(mask, before)


@pytest.mark.parametrize("bad, exc, words", [
    (np.zeros((2, 0)), ValueError, "empty"),
    ([], ValueError, "empty"),
    (np.array([0, 2]), ValueError, "[0, 1]"),
    (np.array([0, -0.5]), ValueError, "[0, 1]"),
    (np.array([0, np.nan]), ValueError, "non-finite"),
    (np.array([1j, 0]), TypeError, "dtype"),
    (np.array(["a"]), TypeError, "dtype"),
    (1.0, ValueError, "scalar"),
    (None, TypeError, "None"),
])
def test_bad_masks(bad, exc, words):
    with pytest.raises(exc, match="mask") as info:
        sparsity_loss(bad, 0.5)
    assert words in str(info.value)


def test_bad_target_and_kind():
    with pytest.raises(ValueError, match="target"):
        sparsity_loss([1, 0], 1.5)
    with pytest.raises(ValueError, match="target"):
        sparsity_loss([1, 0], float("nan"))
    with pytest.raises(TypeError, match="target"):
        sparsity_loss([1, 0], "0.5")
    with pytest.raises(ValueError, match="kind='huber'"):
        sparsity_loss([1, 0], 0.5, "huber")
    with pytest.raises(ValueError, match="kind"):
        balanced_sparsity_loss([1, 0], 1.0, kind="x")
    with pytest.raises(TypeError, match="accuracy_loss"):
        balanced_sparsity_loss([1, 0], None)
    with pytest.raises(ValueError, match="sparsity_weight"):
        balanced_sparsity_loss([1, 0], 1.0, sparsity_weight=float("inf"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.floats(0, 1))
def test_loss_properties(mask, target):
    l1 = sparsity_loss(mask, target, "l1")
    assert sparsity_loss(mask, target, "l2") == pytest.approx(l1 * l1, abs=1e-15)
    hub = sparsity_loss(mask, target, "adaptive")
    assert 0.0 <= hub <= 0.5 * l1 * l1 + 1e-15 or hub == pytest.approx(0.1 * (l1 - 0.05))
    assert sparsity_loss(mask, target, "kl") >= -1e-15


# ------------------------------------------------------------------- balanced loss
def test_balanced_loss_keys_and_total():
    mask = mask_with_zeros(38)
    total, parts = balanced_sparsity_loss(mask, 2.5, target=0.5, sparsity_weight=0.3,
                                          accuracy_weight=0.7)
    assert set(parts) == {"total_loss", "accuracy_loss", "sparsity_loss", "sparsity_weight",
                          "accuracy_weight", "current_sparsity", "target_sparsity"}
    huber = 0.1 * (0.203125 - 0.05)               # default kind: adaptive, as in the model
    assert parts["sparsity_loss"] == pytest.approx(huber, abs=1e-17)
    assert total == parts["total_loss"] == pytest.approx(0.7 * 2.5 + 0.3 * huber, abs=1e-15)
    assert parts["current_sparsity"] == 0.296875 and parts["target_sparsity"] == 0.5
    assert (parts["sparsity_weight"], parts["accuracy_weight"], parts["accuracy_loss"]) == (
        0.3, 0.7, 2.5)
    assert all(isinstance(v, float) for v in parts.values())
    # kind is honoured (the model always used 'adaptive')
    _, p2 = balanced_sparsity_loss(mask, 2.5, target=0.5, kind="l2")
    assert p2["sparsity_loss"] == 0.041259765625
    # a larger sparsity weight gives a larger total when off target
    assert balanced_sparsity_loss(mask, 2.5, 0.5, 2.0)[0] > balanced_sparsity_loss(
        mask, 2.5, 0.5, 1.0)[0]


# ---------------------------------------------------------------------- scheduler
def run(sched, steps, acc=None):
    return [sched.step(acc) for _ in range(steps)]


def test_linear_schedule_model_values():
    s = AdaptiveSparsityScheduler(0.2, 0.5, 0.001, 0.01, warmup_steps=100,
                                  schedule_type="linear")
    out = run(s, 120)
    assert out[0] == {"sparsity_target": 0.2 + 0.01 * (0.5 - 0.2),
                      "loss_weight": 0.001 + 0.01 * (0.01 - 0.001), "progress": 0.01, "step": 1}
    assert out[49]["sparsity_target"] == pytest.approx(0.35, abs=1e-15)
    assert out[99]["sparsity_target"] == 0.5 and out[119]["sparsity_target"] == 0.5
    assert out[99]["loss_weight"] == 0.001 + 1.0 * (0.01 - 0.001)  # the model's rounding
    assert out[99]["progress"] == 1.0
    for i, r in enumerate(out, start=1):
        p = min(1.0, i / 100)
        assert r["sparsity_target"] == 0.2 + p * (0.5 - 0.2)
        assert r["loss_weight"] == 0.001 + p * (0.01 - 0.001)


def test_cosine_schedule():
    s = AdaptiveSparsityScheduler(0.2, 0.5, warmup_steps=100, schedule_type="cosine")
    out = run(s, 100)
    for i, r in enumerate(out, start=1):
        assert r["sparsity_target"] == pytest.approx(
            0.2 + 0.15 * (1 - math.cos(math.pi * i / 100)), abs=1e-15)
    assert out[0]["sparsity_target"] == pytest.approx(0.2, abs=1e-4)
    assert out[49]["sparsity_target"] == pytest.approx(0.35, abs=1e-15)
    assert out[99]["sparsity_target"] == 0.5
    # the weight stays linear whatever the schedule (as in the model)
    assert out[49]["loss_weight"] == 0.001 + 0.5 * (0.01 - 0.001)


def test_cosine_compat_reproduces_model_arithmetic():
    s = AdaptiveSparsityScheduler(0.2, 0.5, warmup_steps=7, schedule_type="cosine",
                                  compat=True)
    exact = AdaptiveSparsityScheduler(0.2, 0.5, warmup_steps=7, schedule_type="cosine")
    for i in range(1, 9):
        p = min(1.0, i / 7)
        model = 0.2 + 0.5 * 0.3 * (1 - float(np.cos(np.float32(p * 3.14159))))
        got = s.step()["sparsity_target"]
        assert got == model
        assert abs(got - exact.step()["sparsity_target"]) < 1e-6
    assert got == 0.5                             # cos(float32(3.14159)) == -1 exactly


def test_step_schedule_model_values():
    s = AdaptiveSparsityScheduler(0.2, 0.5, warmup_steps=4, schedule_type="step")
    targets = [r["sparsity_target"] for r in run(s, 5)]
    assert targets == [0.2 + 0.33 * 0.3, 0.2 + 0.67 * 0.3, 0.5, 0.5, 0.5]
    assert [round(t, 12) for t in targets[:2]] == [0.299, 0.401]
    s = AdaptiveSparsityScheduler(0.2, 0.5, warmup_steps=100, schedule_type="step")
    out = run(s, 100)
    assert out[0]["sparsity_target"] == 0.2 and out[9]["sparsity_target"] == 0.2
    assert out[24]["sparsity_target"] == 0.2 + 0.33 * 0.3    # p = 0.25
    assert out[49]["sparsity_target"] == 0.2 + 0.67 * 0.3    # p = 0.5
    assert out[99]["sparsity_target"] == 0.5


def test_accuracy_adjustment_is_transient():
    s = AdaptiveSparsityScheduler(0.2, 0.5, 0.001, 0.01, warmup_steps=10,
                                  schedule_type="linear", accuracy_threshold=3.0)
    hi = s.step(current_accuracy=4.0)
    assert hi["sparsity_target"] == (0.2 + 0.1 * 0.3) * 0.9
    assert hi["loss_weight"] == (0.001 + 0.1 * (0.01 - 0.001)) * 0.5
    lo = s.step(current_accuracy=2.0)
    assert lo["sparsity_target"] == 0.2 + 0.2 * 0.3
    assert s.best_accuracy == 2.0
    assert s.step()["sparsity_target"] == 0.2 + 0.3 * 0.3     # None: no adjustment
    assert s.step(3.0)["sparsity_target"] == 0.2 + 0.4 * 0.3  # not above the threshold
    # without a threshold the value is only tracked
    t = AdaptiveSparsityScheduler(warmup_steps=10, schedule_type="linear")
    assert t.step(100.0)["sparsity_target"] == 0.2 + 0.1 * 0.3
    assert t.best_accuracy == 100.0


@pytest.mark.parametrize("kind", ["linear", "cosine", "step"])
def test_warmup_zero_means_final_values(kind):
    s = AdaptiveSparsityScheduler(0.2, 0.5, 0.001, 0.01, warmup_steps=0, schedule_type=kind)
    for r in run(s, 3):
        assert (r["sparsity_target"], r["progress"]) == (0.5, 1.0)
        assert r["loss_weight"] == 0.001 + 1.0 * (0.01 - 0.001)


def test_reset_and_state_dict_resume():
    s = AdaptiveSparsityScheduler(0.1, 0.7, warmup_steps=9, schedule_type="cosine",
                                  accuracy_threshold=1.0)
    run(s, 4, acc=0.5)
    state = json.loads(json.dumps(s.state_dict()))
    rest = run(s, 7)
    fresh = AdaptiveSparsityScheduler()
    fresh.load_state_dict(state)
    assert fresh.current_step == 4 and fresh.best_accuracy == 0.5
    assert run(fresh, 7) == rest
    s.reset()
    assert s.current_step == 0 and s.best_accuracy == math.inf
    assert s.step()["step"] == 1


def test_scheduler_validation():
    with pytest.raises(ValueError, match="schedule_type='exp'"):
        AdaptiveSparsityScheduler(schedule_type="exp")
    with pytest.raises(ValueError, match="warmup_steps"):
        AdaptiveSparsityScheduler(warmup_steps=-1)
    with pytest.raises(TypeError, match="warmup_steps"):
        AdaptiveSparsityScheduler(warmup_steps=10.5)
    with pytest.raises(ValueError, match="initial_sparsity"):
        AdaptiveSparsityScheduler(initial_sparsity=float("nan"))
    with pytest.raises(TypeError, match="current_accuracy"):
        AdaptiveSparsityScheduler().step("high")
    s = AdaptiveSparsityScheduler()
    bad = s.state_dict()
    del bad["current_step"]
    with pytest.raises(ValueError, match="current_step"):
        s.load_state_dict(bad)
    bad = dict(s.state_dict(), warmup_steps=-3)
    with pytest.raises(ValueError, match="warmup_steps"):
        s.load_state_dict(bad)
    assert s.warmup_steps == 1000                # a failed load changes nothing


# -------------------------------------------------------------------------- stats
def test_stats_keys_types_before_and_after():
    before = sparsity_stats(None, 0.6, n_seq=128)
    after = sparsity_stats(mask_with_zeros(38, (2, 64)), 0.6, n_seq=64)
    assert before == {"sparsity_ratio": 0.0, "num_computed": 128.0, "target_sparsity": 0.6}
    assert list(before) == list(after)
    assert all(type(before[k]) is type(after[k]) is float for k in before)
    assert after["sparsity_ratio"] == 0.296875
    assert after["num_computed"] == (128 - 38) / 2


def test_stats_rows_and_errors():
    m = np.array([[1, 1, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]])
    assert sparsity_stats(m) == {"sparsity_ratio": 0.5, "num_computed": 2.0,
                                 "target_sparsity": 0.5}
    assert sparsity_stats([1, 0, 0, 0])["num_computed"] == 1.0
    assert sparsity_stats(np.zeros((2, 3)))["sparsity_ratio"] == 1.0
    with pytest.raises(ValueError, match="n_seq"):
        sparsity_stats(None)
    with pytest.raises(ValueError, match="n_seq=5"):
        sparsity_stats(m, n_seq=5)
    with pytest.raises(ValueError, match="shape"):
        sparsity_stats(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="empty"):
        sparsity_stats(np.ones((2, 0)))


def test_import_is_light():
    code = ("import sys, bknumba.sparsity; "
            "bad = [m for m in ('numba', 'scipy', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
