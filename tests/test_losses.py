"""Tests for percept.engine.losses against independent references (scipy, hand-computed values)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from percept.engine.losses import (
    LOSSES,
    cross_entropy_loss,
    get_loss,
    mse_loss,
    plcc_loss,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plcc_loss_matches_scipy_pearson(seed):
    rng = np.random.default_rng(seed)
    target = rng.normal(size=32)
    pred = 0.6 * target + rng.normal(size=32)
    expected = 0.5 * (1.0 - stats.pearsonr(pred, target).statistic)
    loss = plcc_loss(torch.tensor(pred), torch.tensor(target))
    assert loss.dtype == torch.float32
    assert loss.item() == pytest.approx(expected, abs=1e-5)


def test_plcc_loss_accepts_column_vectors_and_hits_bounds():
    target = torch.tensor([1.0, 2.0, 4.0, 8.0])
    assert plcc_loss(target.reshape(-1, 1), target).item() == pytest.approx(0.0, abs=1e-6)
    assert plcc_loss(-3 * target + 1, target.reshape(-1, 1)).item() == pytest.approx(1.0, abs=1e-6)


def test_plcc_loss_constant_predictions_give_half_and_nonzero_finite_gradient():
    pred = torch.full((6,), 0.3, requires_grad=True)
    target = torch.tensor([0.1, 0.5, 0.2, 0.9, 0.4, 0.7])
    loss = plcc_loss(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.5)
    assert torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0
    # descending the gradient must move predictions toward the targets' ordering
    assert stats.pearsonr(-pred.grad.numpy(), target.numpy()).statistic == pytest.approx(1.0)


@pytest.mark.parametrize("pred, target", [
    (torch.tensor([0.7]), torch.tensor([0.2])),                      # batch of one
    (torch.tensor([0.1, 0.4, 0.3]), torch.tensor([0.5, 0.5, 0.5])),  # constant targets
    (torch.tensor([0.2, 0.2]), torch.tensor([0.9, 0.9])),            # both constant
])
def test_plcc_loss_has_no_nan_in_degenerate_batches(pred, target):
    pred = pred.clone().requires_grad_(True)
    loss = plcc_loss(pred, target)
    loss.backward()
    assert loss.item() == pytest.approx(0.5)
    assert torch.isfinite(pred.grad).all()


@pytest.mark.parametrize("pred, target", [
    (torch.zeros(4), torch.zeros(5)),
    (torch.zeros(4, 2), torch.zeros(4)),
    (torch.zeros(0), torch.zeros(0)),
])
def test_plcc_and_mse_loss_reject_bad_shapes(pred, target):
    for loss in (plcc_loss, mse_loss):
        with pytest.raises(ValueError, match="pred|target"):
            loss(pred, target)


def test_mse_loss_hand_value_and_flattening():
    pred = torch.tensor([[1.0], [2.0], [4.0]])
    target = torch.tensor([1.5, 2.0, 1.0])
    assert mse_loss(pred, target).item() == pytest.approx((0.25 + 0.0 + 9.0) / 3)


def test_cross_entropy_loss_hand_value():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0]])
    target = torch.tensor([0, 1])
    first = -math.log(math.exp(2) / (math.exp(2) + 2))
    second = -math.log(math.exp(1) / (1 + math.exp(1) + math.exp(3)))
    assert cross_entropy_loss(logits, target).item() == pytest.approx((first + second) / 2, rel=1e-6)


@pytest.mark.parametrize("logits, target, message", [
    (torch.zeros(2, 3), torch.tensor([0, 3]), r"\[0, 3\)"),
    (torch.zeros(2, 3), torch.tensor([0, 1, 2]), "target must have shape"),
    (torch.zeros(2, 3), torch.tensor([0.0, 1.0]), "integer"),
    (torch.zeros(3), torch.tensor([0, 1, 2]), "logits must have shape"),
])
def test_cross_entropy_loss_rejects_bad_input(logits, target, message):
    with pytest.raises(ValueError, match=message):
        cross_entropy_loss(logits, target)


def test_loss_registry():
    assert LOSSES == {"plcc": plcc_loss, "mse": mse_loss, "cross_entropy": cross_entropy_loss}
    assert get_loss("plcc") is plcc_loss
    with pytest.raises(ValueError, match="cross_entropy.*mse.*plcc"):
        get_loss("huber")
