"""The hub model card of a finished run (``README.md`` of ``percept export --format hub`` / ``percept push``):
base model, task and what the score means, datasets and split, the run's test metrics with the paper's
PerceptCLIP number beside them where the paper has one, the data's licence, how to load it (percept, and plain
transformers + peft from the official-layout export), citation."""
from __future__ import annotations

from .backbones import get_spec
from .data.cards import get_card
from .data.sources import dataset_facts, is_synthetic
from .runs import PROTOCOL, RunDir
from .scoring import GENERATED_DATA_NOTICE, ModelScoring
from .tasks import get_task

SCORE_MEANING = {
    "iqa": "one quality score per image, higher = better quality. Trained with a correlation (PLCC) loss: only the "
           "order of the scores and their linear relation to MOS are meaningful, not their scale.",
    "memorability": "one memorability score per image (the training labels' scale, e.g. LaMem's fraction of "
                    "repeat detections), higher = more memorable.",
    "emotion": "one logit per class; softmax gives the class probabilities.",
}
CITATION = """@article{zalcher2025dont,
  title   = {Don't Judge Before You {CLIP}: A Unified Approach for Perceptual Tasks},
  author  = {Zalcher, Amit and Wasserman, Navve and Beliy, Roman and Heinimann, Oliver and Irani, Michal},
  journal = {Transactions on Machine Learning Research},
  year    = {2025},
  url     = {https://openreview.net/forum?id=wuQTYi6kbu}
}"""
_PAPER_TABLES = ("1", "3", "4", "A.2")        # the tables with PerceptCLIP's single-dataset numbers
_SHOWN = ("srcc", "plcc_logistic", "mse", "accuracy", "acc_2", "macro_f1")


def paper_number(dataset: str, metric: str) -> tuple[float, str] | None:
    """PerceptCLIP's number for ``metric`` (our key) trained and tested on ``dataset`` in the paper, with where
    it comes from (table, statistic over splits), or None."""
    from .paper import PAPER_DATASET_NAMES, load_paper_results
    from .paper_specs import paper_metric
    name = PAPER_DATASET_NAMES.get(dataset)
    theirs = paper_metric(metric, name) if name else None
    if theirs is None:
        return None
    table = load_paper_results()
    rows = table[table["method"].str.startswith("PerceptCLIP") & table["table"].astype(str).isin(_PAPER_TABLES)
                 & (table["train_dataset"] == name) & (table["test_dataset"] == name) & (table["metric"] == theirs)]
    if rows.empty:
        return None
    row = rows.iloc[0]
    note = str(row["note"]) if isinstance(row["note"], str) and row["note"] else "one split"
    return float(row["value"]), f"Table {row['table']}, {note}"


def _metrics_table(metrics: dict, split: int) -> list[str]:
    lines = ["| dataset | metric | this model (split %d) | paper, PerceptCLIP |" % split, "|---|---|---|---|"]
    for dataset, values in metrics.get("test", {}).items():
        for key in _SHOWN:
            if key in values:
                paper = paper_number(dataset, key)
                shown = f"{paper[0]:g} ({paper[1]})" if paper else "—"
                lines.append(f"| {dataset} | {key} | {values[key]:.4f} | {shown} |")
    return lines


HF_CLIP_REPOS = {"clip_vit_l14": "openai/clip-vit-large-patch14", "clip_vit_b16": "openai/clip-vit-base-patch16",
                 "clip_vit_b32": "openai/clip-vit-base-patch32"}


def transformers_snippet(model: dict, outputs: int) -> str | None:
    """Python that rebuilds the release's ``clip_lora_model`` with transformers + peft for this model's sizes and
    loads ``model.pth`` (``percept export --format official``); None when the official layout cannot hold it."""
    from .official_reference import clip_architecture
    if get_spec(model["backbone"]).family != "clip" or model["strategy"] != "lora" or model["head_type"] != "mlp":
        return None
    arch = clip_architecture(model["backbone"], **model.get("backbone_kwargs", {}))
    repo = HF_CLIP_REPOS.get(model["backbone"], "a CLIP vision tower of these sizes")
    (h1, h2), w, p = model["head_hidden"], arch.width, arch.proj_dim
    return "\n".join([
        "import torch, peft, transformers", "",
        f'vision = transformers.CLIPVisionModel.from_pretrained("{repo}")',
        'vision = getattr(vision, "vision_model", vision)   # transformers 4 nests the transformer, 5 does not', "",
        "class PerceptCLIPRelease(torch.nn.Module):          # the release's clip_lora_model",
        f"    def __init__(self, outputs={outputs}):", "        super().__init__()",
        f"        lora = peft.LoraConfig(r={model['lora_r']}, lora_alpha={model['lora_alpha']:g}, "
        f"lora_dropout={model['lora_dropout']:g},",
        '                               target_modules=["q_proj", "k_proj", "v_proj"])',
        "        self.model = peft.get_peft_model(vision, lora)",
        f"        self.proj = torch.nn.Linear({w}, {p}, bias=False)",
        "        self.mlp = torch.nn.Module()                 # ReLU between the layers (dropout only in training)",
        f"        self.mlp.fc1, self.mlp.fc2 = torch.nn.Linear({p}, {h1}), torch.nn.Linear({h1}, {h2})",
        f"        self.mlp.fc3 = torch.nn.Linear({h2}, outputs)", "",
        f"    def forward(self, x):                            # x: (B, 3, {arch.img_size}, {arch.img_size}), "
        "CLIP-normalised",
        "        h = self.proj(self.model(pixel_values=x).pooler_output)",
        "        return self.mlp.fc3(self.mlp.fc2(self.mlp.fc1(h).relu()).relu())", "",
        "model = PerceptCLIPRelease().eval()",
        'model.load_state_dict(torch.load("model.pth", weights_only=True))'])


def render_model_card(run: RunDir, official_problem: str | None = None) -> str:
    """The card's Markdown; ``official_problem``: why ``--format official`` cannot hold this model (None: it can;
    :func:`percept.export.format_problem`)."""
    config, metrics = run.read_config(), run.read_metrics()
    model = config["model"]
    spec = get_spec(model["backbone"])
    facts = [dataset_facts(entry) for entry in config["data"]]
    task = facts[0][1]
    names = [f[0] for f in facts]
    base = spec.hub_id if spec.has_pretrained and not spec.shipped_weights else None
    header = ["---", "library_name: percept", "tags: [perceptclip, clip, lora, " + task + "]"]
    header += [f"base_model: {base}"] if base else []
    header += ["license: other", "---", ""]
    counts = metrics.get("parameters", {})
    rows = [
        ("Base model", f"`{spec.timm_name}` ({spec.reference})" + (f", weights `{base}`" if base else "")),
        ("Adaptation", f"{model['strategy']}" + (f" (r={model['lora_r']}, alpha={model['lora_alpha']:g} on q, k, v)"
                                                 if model["strategy"] == "lora" else "")
         + f", {model['head_type']} head" + (f"; {counts['trainable']:,} trainable parameters" if counts else "")),
        ("Task", f"{task} ({get_task(task).kind}, loss {get_task(task).loss})"),
        ("Trained on", ", ".join(names) + f", split {config['split']}" + (" (multi-dataset: one head per dataset)"
                                                                         if len(names) > 1 else "")),
        ("Training", f"lr {config['lr']:g}, best epoch {metrics.get('best_epoch', '?')} of "
                     f"{metrics.get('epochs_run', '?')} (early stopping on validation "
                     f"{metrics.get('select_metric', '')})"),
        ("Score", SCORE_MEANING[task] + (" Classes: " + ", ".join(facts[0][2]) + "." if facts[0][2] else "")),
    ]
    lines = header + [f"# PerceptCLIP: {task} on {', '.join(names)}", "",
                      "Trained with `percept`, the reproducible implementation of PerceptCLIP (Zalcher, Wasserman "
                      "et al., TMLR 2025): a CLIP vision encoder, LoRA on the attention's q, k, v projections and "
                      "a small head on the projected CLS embedding.", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    if ModelScoring.from_run_config(config).generated_data:
        lines += ["", f"**Not a model of human judgements.** This is a {GENERATED_DATA_NOTICE}: it shows the "
                  "recipe working end to end, nothing more."]
    if config.get("protocol") != PROTOCOL:
        lines += ["", f"**Test metrics of an older percept.** This run was trained and tested under percept protocol "
                  f"{config.get('protocol', 1)} (this version: {PROTOCOL}; e.g. the IQA test crops were placed "
                  f"differently); the folder scores images with this version's preprocessing, so its scores can "
                  f"differ slightly from the ones behind these metrics."]
    lines += ["", "## Test metrics", ""] + _metrics_table(metrics, int(config["split"]))
    lines += ["", "The paper's numbers aggregate all its splits; this model is one split's, so the two are "
              "comparable only roughly.", "", "## Data licence", ""]
    for name, *_rest in facts:
        card = None if is_synthetic(name) else get_card(name)
        licence = card.licence if card is not None else "generated by percept (synthetic demo data)"
        lines.append(f"- **{name}**: {licence}" + (f" Cite: {card.citation}" if card is not None and card.citation
                                                   else ""))
    lines += ["", "## How to use", "", "Scored exactly as its run scored (its test preprocessing is in "
              "`preprocessor_config.json`):", "", "```bash", "percept predict photos/ --model THIS_FOLDER", "```", "",
              "```python", "import percept",
              'metric = percept.create_metric("THIS_FOLDER")          # paths, PIL images or [0, 1] tensors',
              'model = percept.PerceptCLIP.from_pretrained("USER/REPO")   # the bare network; fetches the backbone '
              "by name", "scores = model(images)                 # (B, 3, 224, 224), normalised with "
              "model.normalization", "```", "",
              ]
    lines += ["Other formats of the same run: `percept export RUN --format merged --out model.safetensors` (LoRA "
              "folded into plain timm weights; `percept.load_merged`).", ""]
    official = ("Plain transformers + peft (no percept): `percept export RUN --format official --out model.pth` "
                "writes the authors' release layout, which their modeling code loads (with the release's "
                "preprocessing, resize 224 + centre crop, not this run's test crops)")
    snippet = transformers_snippet(model, facts[0][2] and len(facts[0][2]) or 1) if official_problem is None else None
    lines += [official + "; in short:", "", "```python", snippet, "```", ""] if snippet else \
        [f"The authors' release layout (`--format official`) cannot hold this model: "
         f"{official_problem or 'it holds a CLIP backbone with LoRA and the MLP head only'}.", ""]
    lines += [
              "## Citation", "", "```bibtex", CITATION,
              "```", ""]
    return "\n".join(lines)
