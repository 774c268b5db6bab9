"""Projected wall times of the paper's training grids from measured training and inference rates
(:func:`project_tables`; the assumptions are listed in its output and in :mod:`percept.study.bench`)."""
from __future__ import annotations

IQA_SPLITS, OTHER_SPLITS = 10, {"lamem": 5, "emotionroi": 5, "emoset": 1}
# (train, val, test) fractions of the images: IQA 80/20 with 10% of train held out for validation (§4.1);
# LaMem 45,000 / 3,741 / 10,000 (official); EmoSet 80/5/15 (official); EmotionROI 75/5/20 (§4.3)
FRACTIONS = {"iqa": (0.72, 0.08, 0.20), "lamem": (45000 / 58741, 3741 / 58741, 10000 / 58741),
             "emoset": (0.80, 0.05, 0.15), "emotionroi": (0.75, 0.05, 0.20)}
PAPER_TABLES = {
    "Table 1 (IQA)": ("livec", "koniq10k", "spaq", "flive", "live", "tid2013", "kadid10k"),
    "Memorability (LaMem)": ("lamem",),
    "Emotion (EmoSet, EmotionROI)": ("emoset", "emotionroi"),
}
TEST_CROPS = 15



def project_tables(train_rate: float | None, eval_rate: float | None, *, max_epochs: int = 40,
                   typical_epochs: int = 20, lrs: int = 4, gpus=(1, 8)) -> dict:
    """Projected wall time (hours) of each paper table's training grid from measured rates (images/s)."""
    from ...data.cards import CARDS
    if not train_rate or not eval_rate:
        return {"error": "no measured training/inference rate"}
    tables = {}
    for table, names in PAPER_TABLES.items():
        rows, totals, longest = {}, {"max": 0.0, "typical": 0.0}, {"max": 0.0, "typical": 0.0}
        for name in names:
            card = CARDS[name]
            iqa = card.task == "iqa"
            splits = IQA_SPLITS if iqa else OTHER_SPLITS[name]
            f_train, f_val, f_test = FRACTIONS["iqa" if iqa else name]
            crops = TEST_CROPS if iqa else 1
            n = card.expected_images
            train_items = n * f_train * (card.train_replicas or 1)
            val_items, test_items = n * f_val * crops, n * f_test * crops
            row = {"images": n, "runs": splits * lrs, "train_items_per_epoch": round(train_items),
                   "eval_forwards_per_epoch": round(val_items)}
            for label, epochs in (("max", max_epochs), ("typical", typical_epochs)):
                seconds = (epochs * train_items / train_rate + (epochs + 1) * val_items / eval_rate
                           + test_items / eval_rate)
                row[f"hours_per_run_{label}"] = seconds / 3600
                totals[label] += seconds * splits * lrs
                longest[label] = max(longest[label], seconds)
            rows[name] = row
        entry = {"datasets": rows, "runs": sum(r["runs"] for r in rows.values())}
        for label in ("max", "typical"):
            for g in gpus:
                entry[f"hours_{label}_epochs_{g}gpu"] = max(totals[label] / g, longest[label]) / 3600
        tables[table] = entry
    return {"tables": tables, "train_images_per_s": train_rate, "inference_images_per_s": eval_rate,
            "assumptions": {
                "max_epochs": max_epochs, "typical_epochs": typical_epochs, "learning_rates": lrs,
                "splits": {"iqa": IQA_SPLITS, **OTHER_SPLITS}, "fractions_train_val_test": FRACTIONS,
                "iqa_test_crops": TEST_CROPS,
                "notes": "images = dataset cards' expected_images; IQA training items include LoDa's replicas; "
                         "validation every epoch + a final val and test evaluation; typical_epochs is an "
                         "assumption (best epoch ~8 + patience 12), not a measurement; multi-GPU wall time = "
                         "max(total / GPUs, longest run) (independent runs, one per GPU); data preparation, "
                         "cache building and model loading are not included; ablation tables (6, 7, A.7-A.11) "
                         "repeat these grids with other model variants."}}
