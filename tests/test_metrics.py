"""Tests for percept.core.metrics against scipy/sklearn references and hand-computed cases."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from sklearn.metrics import average_precision_score, f1_score

from percept.core import metrics
from percept.core.metrics import (
    EMOSET_CLASSES,
    EMOTIONROI_CLASSES,
    binary_valence_accuracy,
    classification_metrics,
    fit_logistic_4p,
    krcc,
    logistic_4p,
    mean_average_precision,
    plcc,
    plcc_logistic,
    regression_metrics,
    srcc,
    valence_of,
)


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(0)
    target = rng.uniform(1, 5, size=200)
    pred = target + rng.normal(scale=0.8, size=200)
    return pred, target


# ----------------------------------------------------------------------------- regression
def test_correlations_match_scipy(noisy_pair):
    pred, target = noisy_pair
    assert srcc(pred, target) == pytest.approx(stats.spearmanr(pred, target)[0])
    assert krcc(pred, target) == pytest.approx(stats.kendalltau(pred, target)[0])
    assert plcc(pred, target) == pytest.approx(stats.pearsonr(pred, target)[0])


def test_correlations_accept_lists_and_tensors(noisy_pair):
    pred, target = noisy_pair
    expected = stats.spearmanr(pred, target)[0]
    assert srcc(list(pred), torch.tensor(target).reshape(-1, 1)) == pytest.approx(expected)
    assert srcc(torch.tensor(pred, requires_grad=True), target) == pytest.approx(expected)


def test_monotone_nonlinear_hand_case():
    pred = np.arange(1.0, 11.0)
    target = np.exp(pred)
    assert srcc(pred, target) == pytest.approx(1.0)
    assert krcc(pred, target) == pytest.approx(1.0)
    assert plcc(pred, target) < 0.9


def test_logistic_4p_formula():
    # b2 + (b1 - b2) / (1 + exp(-(x - b3)/|b4|)): midpoint, asymptotes and sign of b4 ignored
    assert logistic_4p(2.0, 5.0, 1.0, 2.0, 0.5) == pytest.approx(3.0)
    assert logistic_4p(1e6, 5.0, 1.0, 2.0, 0.5) == pytest.approx(5.0)
    assert logistic_4p(-1e6, 5.0, 1.0, 2.0, -0.5) == pytest.approx(1.0)
    assert logistic_4p(3.0, 5.0, 1.0, 2.0, -0.5) == pytest.approx(1.0 + 4.0 / (1.0 + np.exp(-2.0)))


def test_fit_recovers_known_logistic():
    rng = np.random.default_rng(1)
    pred = rng.uniform(-3, 3, size=300)
    target = logistic_4p(pred, 80.0, 10.0, 0.5, 0.7) + rng.normal(scale=1.0, size=300)
    params, fitted = fit_logistic_4p(pred, target)
    assert stats.pearsonr(fitted, target)[0] > 0.99
    assert params[:3] == pytest.approx([80.0, 10.0, 0.5], abs=2.0)
    assert abs(params[3]) == pytest.approx(0.7, abs=0.1)


# LoDa's fixed initial b4 = 0.5 gives plcc ~0.95 instead of ~0.998 on the 1e4 and 1e-4 scales
@pytest.mark.parametrize("rescale", [lambda x: x, lambda x: 1000 * x, lambda x: x - 500, lambda x: 1e-3 * x + 7,
                                     lambda x: 1e4 * x - 5000, lambda x: 1e-4 * x])
def test_plcc_logistic_beats_raw_plcc_on_any_scale(rescale):
    rng = np.random.default_rng(2)
    raw = rng.uniform(0, 1, size=250)
    target = 1 + 4 / (1 + np.exp(-(raw - 0.5) / 0.08)) + rng.normal(scale=0.1, size=250)
    pred = rescale(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fit must converge, not fall back
        corrected = plcc_logistic(pred, target)
    assert corrected > 0.98
    assert corrected > plcc(pred, target) + 0.01
    assert corrected == pytest.approx(plcc_logistic(raw, target), abs=1e-4)


def test_fit_falls_back_to_identity_with_warning():
    pred, target = np.array([1.0, 1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0, 4.0])
    with pytest.warns(RuntimeWarning, match="identity"):
        params, fitted = fit_logistic_4p(pred, target)
    assert np.isnan(params).all() and np.array_equal(fitted, pred)
    with pytest.warns(RuntimeWarning, match="identity"):
        assert plcc_logistic([1.0, 2.0, 3.0], [1.0, 3.0, 2.0]) == pytest.approx(plcc([1, 2, 3], [1, 3, 2]))


def test_fit_falls_back_when_curve_fit_fails(monkeypatch):
    def failing_curve_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")
    monkeypatch.setattr(metrics, "curve_fit", failing_curve_fit)
    pred, target = [0.1, 0.5, 0.2, 0.9, 0.4], [1.0, 3.0, 2.0, 5.0, 2.5]
    with pytest.warns(RuntimeWarning, match="did not converge"):
        assert plcc_logistic(pred, target) == pytest.approx(stats.pearsonr(pred, target)[0])


def test_mse_rmse_and_regression_metrics_dict():
    pred, target = [1.0, 2.0, 4.0], [1.5, 2.0, 1.0]
    assert metrics.mse(pred, target) == pytest.approx(9.25 / 3)
    assert metrics.rmse(pred, target) == pytest.approx(np.sqrt(9.25 / 3))
    rng = np.random.default_rng(3)
    target = rng.uniform(size=50)
    pred = target + rng.normal(scale=0.1, size=50)
    results = regression_metrics(pred, target)
    assert set(results) == {"srcc", "krcc", "plcc", "plcc_logistic", "mse", "rmse"}
    assert all(isinstance(value, float) for value in results.values())
    assert results["srcc"] == pytest.approx(stats.spearmanr(pred, target)[0])
    assert results["mse"] == pytest.approx(np.mean((pred - target) ** 2))


@pytest.mark.parametrize("function", [srcc, krcc, plcc, plcc_logistic, regression_metrics])
@pytest.mark.parametrize("pred, target, message", [
    ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0], "pred contains NaN"),
    ([1.0, 2.0, 3.0], [1.0, np.inf, 3.0], "target contains NaN or inf"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], "different lengths: 3 vs 2"),
    ([1.0], [2.0], "at least 2 samples"),
    (np.ones((3, 2)), np.ones(3), "pred must be 1-D"),
])
def test_regression_metrics_reject_bad_input(function, pred, target, message):
    with pytest.raises(ValueError, match=message):
        function(pred, target)


# ----------------------------------------------------------------------------- classification
def test_three_class_hand_case():
    labels = [0, 0, 1, 1, 2, 2]
    pred_labels = [0, 1, 1, 1, 2, 0]
    # per-class (precision, recall): 0: (1/2, 1/2) 1: (2/3, 1) 2: (1, 1/2) -> F1 1/2, 4/5, 2/3
    assert metrics.accuracy(pred_labels, labels) == pytest.approx(4 / 6)
    assert metrics.macro_f1(pred_labels, labels) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    assert metrics.weighted_f1(pred_labels, labels) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    # unequal supports: class 0 (support 3) F1 = 4/5, class 1 (support 1) F1 = 2/3
    assert metrics.macro_f1([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx((4 / 5 + 2 / 3) / 2)
    assert metrics.weighted_f1([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.75 * 4 / 5 + 0.25 * 2 / 3)


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 8, size=400)
    logits = rng.normal(size=(400, 8)) + 1.5 * np.eye(8)[labels]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    pred_labels = probs.argmax(axis=1)
    per_class_ap = [average_precision_score(labels == c, probs[:, c]) for c in range(8)]
    assert mean_average_precision(probs, labels, 8) == pytest.approx(np.mean(per_class_ap))
    results = classification_metrics(torch.tensor(probs), torch.tensor(labels), EMOSET_CLASSES)
    assert results["accuracy"] == pytest.approx(np.mean(pred_labels == labels))
    assert results["mAP"] == pytest.approx(np.mean(per_class_ap))
    assert results["macro_f1"] == pytest.approx(f1_score(labels, pred_labels, average="macro"))
    assert results["weighted_f1"] == pytest.approx(f1_score(labels, pred_labels, average="weighted"))
    valence = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert results["acc_2"] == pytest.approx(np.mean(valence[pred_labels] == valence[labels]))
    assert "acc_2" not in classification_metrics(probs, labels)


def test_valence_of_known_datasets():
    assert valence_of(EMOSET_CLASSES).tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert valence_of(EMOTIONROI_CLASSES).tolist() == [0, 0, 0, 1, 0, 1]
    assert valence_of(["Joy", " Surprise "]).tolist() == [1, 1]
    with pytest.raises(ValueError, match="unknown emotions.*'neutral'"):
        valence_of(["joy", "neutral"])
    with pytest.raises(ValueError, match="single string"):
        valence_of("joy")


def test_binary_valence_accuracy_emoset_and_emotionroi():
    idx = EMOSET_CLASSES.index
    # awe for amusement: same (positive) valence -> correct; sadness for contentment -> wrong
    assert binary_valence_accuracy([idx("awe")], [idx("amusement")], EMOSET_CLASSES) == 1.0
    assert binary_valence_accuracy([idx("sadness")], [idx("contentment")], EMOSET_CLASSES) == 0.0
    assert binary_valence_accuracy([idx("anger"), idx("awe")], [idx("fear"), idx("fear")], EMOSET_CLASSES) == 0.5
    roi = EMOTIONROI_CLASSES.index
    assert binary_valence_accuracy([roi("joy"), roi("anger")], [roi("surprise"), roi("sadness")], EMOTIONROI_CLASSES) == 1.0
    assert binary_valence_accuracy([roi("joy")], [roi("fear")], EMOTIONROI_CLASSES) == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda: metrics.accuracy([0, 1, 2], [0, 1]), "different lengths: 3 vs 2"),
    (lambda: metrics.accuracy([0.0, 1.0], [0, 1]), "pred_labels must hold integer"),
    (lambda: metrics.macro_f1([0, -1], [0, 1]), "pred_labels has negative labels"),
    (lambda: mean_average_precision(np.ones((2, 3)), [0, 3], 3), r"labels outside the class range \[0, 3\)"),
    (lambda: mean_average_precision(np.ones((2, 4)), [0, 1], 3), r"probs must have shape \(N, 3\)"),
    (lambda: mean_average_precision(np.full((2, 3), np.nan), [0, 1], 3), "probs contains NaN"),
    (lambda: classification_metrics(np.ones((2, 6)), [0, 1], EMOSET_CLASSES), r"probs must have shape \(N, 8\)"),
    (lambda: classification_metrics(np.ones(6), [0, 1]), r"probs must have shape \(N, C\)"),
    (lambda: classification_metrics(np.ones((3, 8)), [0, 1], EMOSET_CLASSES), "different lengths"),
    (lambda: binary_valence_accuracy([6], [0], EMOTIONROI_CLASSES), r"outside the class range \[0, 6\)"),
])
def test_classification_rejects_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
