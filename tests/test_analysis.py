"""Error analysis and figures from saved predictions (paper §6, Appendix A.4), on hand-made run dirs."""
import json

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from percept.core.metrics import EMOSET_CLASSES
from percept.study import analysis

matplotlib.use("Agg")

# (true, predicted) class indices of EmoSet: 0 amusement 1 awe 2 contentment 3 excitement 4 anger
# 5 disgust 6 fear 7 sadness
EMOTION_PAIRS = [(7, 2), (7, 2), (7, 2), (4, 3), (4, 3), (0, 2), (6, 5), (7, 7), (2, 2), (4, 4), (1, 6)]


def write_run(path, frame, config):
    path.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path / "predictions.csv", index=False)
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture
def emotion_run(tmp_path):
    rows = []
    for i, (t, p) in enumerate(EMOTION_PAIRS):
        probs = np.full(len(EMOSET_CLASSES), 0.05)
        probs[p] = 0.5 + i / 100            # later rows are more confident
        rows.append({"id": f"img/{i:02d}.jpg", "label": t, "prediction": p,
                     **{f"prob_{name}": probs[c] / probs.sum() for c, name in enumerate(EMOSET_CLASSES)}})
    config = {"task": "emotion", "dataset": "emoset", "data_root": str(tmp_path), "class_names": list(EMOSET_CLASSES)}
    return write_run(tmp_path / "emotion", pd.DataFrame(rows), config)


@pytest.fixture
def regression_pred():
    label = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    prediction = np.array([2.5, 2.4, 3.1, 3.9, 4.2, 4.6])    # concentrated around the mean
    return pd.DataFrame({"id": [f"r{i}.png" for i in range(6)], "label": label, "prediction": prediction})


# ---------------------------------------------------------------- loading
def test_load_predictions_and_errors(tmp_path, emotion_run, regression_pred):
    pred = analysis.load_predictions(emotion_run)
    assert len(pred) == len(EMOTION_PAIRS) and pred.attrs["config"]["task"] == "emotion"
    assert analysis.class_names_of(pred) == list(EMOSET_CLASSES)
    with pytest.raises(FileNotFoundError, match="nope"):
        analysis.load_predictions(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="predictions.csv"):
        analysis.load_predictions(tmp_path / "empty")
    multi = write_run(tmp_path / "multi", pd.read_csv(emotion_run / "predictions.csv"), {"task": "emotion"})
    (multi / "predictions.csv").rename(multi / "predictions_emoset.csv")
    with pytest.raises(FileNotFoundError, match=r"predictions_emoset.csv'\]: pass dataset="):
        analysis.load_predictions(multi)
    by_name = analysis.load_predictions(multi, dataset="emoset")
    assert analysis.class_names_of(by_name) == list(EMOSET_CLASSES)            # from the prob_ columns
    assert len(analysis.load_predictions(emotion_run / "predictions.csv")) == len(EMOTION_PAIRS)
    broken = write_run(tmp_path / "broken", regression_pred.drop(columns=["prediction"]),
                       {"task": "iqa", "dataset": "koniq10k", "data_root": "/x", "class_names": None})
    with pytest.raises(ValueError, match=r"lacks columns \['prediction'\]"):
        analysis.load_predictions(broken)
    frame = pd.read_csv(emotion_run / "predictions.csv").drop(columns=["prob_fear", "prob_awe"])
    config = json.loads((emotion_run / "config.json").read_text())
    with pytest.raises(ValueError, match=r"\['prob_awe', 'prob_fear'\]"):
        analysis.load_predictions(write_run(tmp_path / "noprob", frame, config))


# ---------------------------------------------------------------- emotion
def test_confusion_matrix_matches_hand_counts(emotion_run):
    pred = analysis.load_predictions(emotion_run)
    table = analysis.confusion_matrix_table(pred)
    assert table.index.name == "true" and list(table.columns) == list(EMOSET_CLASSES)
    expected = np.zeros((8, 8), dtype=int)
    for t, p in EMOTION_PAIRS:
        expected[t, p] += 1
    np.testing.assert_array_equal(table.to_numpy(), expected)
    assert table.loc["sadness", "contentment"] == 3 and table.loc["contentment", "sadness"] == 0
    rows = analysis.confusion_matrix_table(pred, normalize="true")
    assert rows.loc["sadness", "contentment"] == pytest.approx(0.75)


def test_cross_valence_confusions(emotion_run):
    pred = analysis.load_predictions(emotion_run)
    table = analysis.cross_valence_confusions(pred, n_examples=2)
    # cross-valence: sadness->contentment x3, anger->excitement x2, awe->fear x1 (amusement->contentment
    # and fear->disgust stay within one valence)
    assert list(zip(table["true"], table["predicted"], table["count"])) == [
        ("sadness", "contentment", 3), ("anger", "excitement", 2), ("awe", "fear", 1)]
    assert table["rate"].tolist() == pytest.approx([3 / 4, 2 / 3, 1.0])
    assert table["examples"][0] == ["img/02.jpg", "img/01.jpg"]   # most confident first
    custom = analysis.cross_valence_confusions(pred, positive=["fear"])
    assert ("awe", "fear") in set(zip(custom["true"], custom["predicted"]))
    with pytest.raises(ValueError, match="not among the classes"):
        analysis.cross_valence_confusions(pred, positive=["joy"])


# ---------------------------------------------------------------- regression
def test_zscore_differences_order(regression_pred):
    table = analysis.zscore_differences(regression_pred)
    label_z = (regression_pred.label - regression_pred.label.mean()) / regression_pred.label.std(ddof=0)
    pred_z = (regression_pred.prediction - regression_pred.prediction.mean()) / regression_pred.prediction.std(ddof=0)
    expected = (pred_z - label_z).abs().sort_values(ascending=False)
    assert list(table["id"]) == list(regression_pred.id[expected.index])
    np.testing.assert_allclose(table["abs_z_difference"], expected.to_numpy())
    with pytest.raises(ValueError, match="distinct"):
        analysis.zscore_differences(regression_pred.assign(prediction=1.0))


def test_largest_errors_at_both_ends(regression_pred):
    low = analysis.largest_errors(regression_pred, n=2, end="low")
    high = analysis.largest_errors(regression_pred, n=2, end="high")
    assert list(low["id"]) == ["r0.png", "r1.png"] and (low["error"] > 0).all()     # over-estimated
    assert list(high["id"]) == ["r5.png", "r4.png"] and (high["error"] < 0).all()   # under-estimated
    overall = analysis.largest_errors(regression_pred, n=1, end="high", fraction=1.0)
    assert overall["id"][0] == "r0.png"
    with pytest.raises(ValueError, match="end must be"):
        analysis.largest_errors(regression_pred, end="middle")


def test_histogram_data(regression_pred):
    data = analysis.histogram_data(regression_pred, bins=5)
    assert len(data["edges"]) == 6 and data["edges"][0] == 1.0 and data["edges"][-1] == 6.0
    assert data["label_counts"].sum() == data["prediction_counts"].sum() == 6
    np.testing.assert_array_equal(data["prediction_counts"], [0, 2, 2, 2, 0])
    assert data["prediction_std"] < data["label_std"]


def test_score_titles(regression_pred, emotion_run):
    assert analysis.score_titles(regression_pred.head(1)) == ["T: 1.00 / P: 2.50"]
    pred = analysis.load_predictions(emotion_run)
    assert analysis.score_titles(pred.head(1), EMOSET_CLASSES) == ["T: sadness / P: contentment"]


# ---------------------------------------------------------------- figures
def test_plots_return_figures(emotion_run, regression_pred, tmp_path):
    pred = analysis.load_predictions(emotion_run)
    figures = {
        "heads": (analysis.plot_head_importance(np.arange(8.0).reshape(4, 2)), 2),
        "confusion": (analysis.plot_confusion_matrix(analysis.confusion_matrix_table(pred)), 2),
        "histograms": (analysis.plot_score_histograms(regression_pred), 1),
        "gallery": (analysis.plot_gallery([np.zeros((8, 8, 3), np.uint8)] * 3,
                                          analysis.score_titles(regression_pred.head(3))), 3),
    }
    for name, (fig, axes) in figures.items():
        assert isinstance(fig, Figure) and len(fig.axes) == axes, name
        fig.savefig(tmp_path / f"{name}.png")
    gallery = figures["gallery"][0]
    assert [ax.get_title() for ax in gallery.axes] == ["T: 1.00 / P: 2.50", "T: 2.00 / P: 2.40", "T: 3.00 / P: 3.10"]
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "head": [0, 1, 0, 1], "importance": [1.0, 2.0, 3.0, 4.0]})
    heat = analysis.plot_head_importance(table).axes[0].images[0].get_array()
    np.testing.assert_array_equal(heat, [[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="3 images but 2 titles"):
        analysis.plot_gallery([np.zeros((4, 4, 3))] * 3, ["a", "b"])


def test_attention_overlay_difference_is_symmetric():
    tuned = np.full((2, 7, 7), 1 / 49)
    tuned[0, 3, 3] += 0.3
    original = np.full((2, 7, 7), 1 / 49)
    original[0, 0, 0] += 0.1
    maps = {"finetuned": tuned, "original": original, "difference": tuned - original, "layer": 3, "head": 1}
    image = torch.randn(3, 224, 224)                     # a CLIP-normalised tensor
    fig = analysis.plot_attention_overlay(image, maps, index=0)
    assert isinstance(fig, Figure) and len(fig.axes) == 5   # image, fine-tuned, original, difference, colorbar
    diff = fig.axes[3].images[-1]
    assert isinstance(diff.norm, TwoSlopeNorm) and diff.norm.vcenter == 0
    assert diff.norm.vmin == pytest.approx(-0.3) and diff.norm.vmax == pytest.approx(0.3)   # ±max|diff|, not min-max
    tuned_img, original_img = fig.axes[1].images[-1], fig.axes[2].images[-1]
    assert tuned_img.norm.vmin == original_img.norm.vmin == 0
    assert tuned_img.norm.vmax == original_img.norm.vmax                       # one shared scale
    assert fig._suptitle.get_text() == "layer 3, head 1"


def test_attention_gallery_one_row_per_head_and_image_with_its_own_scale():
    rows = []
    for k, peak in enumerate((0.3, 0.05)):
        tuned = np.full((7, 7), 1 / 49)
        tuned[k, k] += peak
        original = np.full((7, 7), 1 / 49)
        rows.append({"layer": 2, "head": k, "image_index": 1 - k, "effect": peak, "finetuned": tuned,
                     "original": original, "difference": tuned - original})
    images = [np.zeros((32, 32, 3)), np.ones((32, 32, 3))]
    fig = analysis.plot_attention_gallery(images, rows, labels=["a.png", "b.png"], denormalize=False)
    assert len(fig.axes) == 2 * 5                         # 4 panels + a colorbar per row
    assert fig.axes[0].get_title().startswith("layer 2, head 0: b.png")    # row 0 shows images[1]
    assert (fig.axes[0].images[0].get_array() == 1).all()
    limits = [fig.axes[r * 4 + 3].images[-1].norm.vmax for r in range(2)]
    assert limits == pytest.approx([0.3, 0.05])           # each row centred at 0, scaled by its own max|diff|
    with pytest.raises(ValueError, match="no rows"):
        analysis.plot_attention_gallery(images, [])
