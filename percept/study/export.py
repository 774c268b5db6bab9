"""Share a trained run (``percept export`` / ``percept push``): three formats and a generated model card.

* ``hub`` — a folder for the Hugging Face hub: ``config.json`` + ``model.safetensors`` (what
  :meth:`PerceptCLIP.save_pretrained` writes: LoRA + heads for a pretrained backbone, ~11 MB for ViT-L/14),
  ``preprocessor_config.json`` (the run's test preprocessing and what each head predicts,
  :mod:`percept.engine.scoring`; its SHA-256 in ``config.json``) and a ``README.md`` model card (:func:`model_card`).
  ``percept predict --model DIR``, ``create_metric(DIR)`` and the app score with it exactly as the run did; the
  bare network loads with ``percept.PerceptCLIP.from_pretrained(dir_or_repo)``.
* ``official`` — one ``.pth`` state dict in the authors' release layout (transformers ``CLIPVisionModel`` + peft
  LoRA on ``q_proj/k_proj/v_proj`` + ``proj`` + ``mlp.fc1..fc3``; :mod:`percept.model.official_layout`), so that the
  authors' modeling code and Gradio demo load a model trained here. It holds the whole encoder (~1.2 GB for
  L/14) and one head; only a CLIP backbone with LoRA and the MLP head fit in it. A plain dict of tensors written
  with ``torch.save`` (readable with ``torch.load(weights_only=True)``): that is the release's format.
* ``merged`` — one safetensors file: LoRA folded into the encoder, in timm's own layout (fused ``qkv``), the heads
  beside it, the architecture's timm arguments, the percept config and the run's scoring in its metadata
  (:mod:`percept.model.merged`): ``percept.load_merged(FILE)``, ``percept predict --model FILE``, or plain timm.

What a model can be exported to is decided in one place (:func:`format_problem`), which both ``export`` and the
model card ask.

Model card: the hub model card of a finished run (``README.md`` of ``percept export --format hub`` / ``percept push``):
base model, task and what the score means, datasets and split, the run's test metrics with the paper's
PerceptCLIP number beside them where the paper has one, the data's licence, how to load it (percept, and plain
transformers + peft from the official-layout export), citation.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from huggingface_hub import HfApi
from safetensors.torch import save_file

from ..core.files import atomic_path
from ..core.tasks import get_task
from ..data.cards import get_card
from ..data.sources import dataset_facts, is_synthetic
from ..engine.runs import PROTOCOL, RunDir
from ..engine.scoring import GENERATED_DATA_NOTICE, ModelScoring, write_hub_scoring
from ..model.backbones import get_spec
from ..model.merged import MERGED_HEAD_PREFIX, merged_metadata, merged_state_dict  # noqa: F401  (MERGED_HEAD_PREFIX: API)
from ..model.official_layout import percept_to_official_state_dict
from ..model.official_reference import clip_architecture
from ..model.perceptclip import PerceptCLIP
from .paper import PAPER_DATASET_NAMES, load_paper_results
from .paper_specs import paper_metric

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
    :func:`percept.study.export.format_problem`)."""
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


FORMATS = ("hub", "official", "merged")


def finished_run(run_dir: str | os.PathLike) -> RunDir:
    """The run, if it finished (``metrics.json`` says complete); a clear error otherwise."""
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise FileNotFoundError(f"{run.path} is not a run directory (no config.json)")
    if not run.is_complete():
        raise ValueError(f"{run.path} is unfinished (metrics.json does not say complete): finish it first with "
                         f"`percept train {run.path}`, which resumes it")
    run.require_weights()
    return run


def _one_head(model: PerceptCLIP, head_name: str | None, fmt: str) -> str:
    names = model.head_names()
    if head_name is None:
        if len(names) > 1:
            raise ValueError(f"the {fmt} format holds one head and this multi-dataset model has {len(names)}: "
                             f"{', '.join(names)}; choose one with --head-name (the hub and merged formats keep all)")
        return names[0]
    if head_name not in names:
        raise ValueError(f"no head {head_name!r} in this model; its heads: {', '.join(names)}")
    return head_name


def official_state_dict(model: PerceptCLIP, head_name: str | None = None) -> dict[str, torch.Tensor]:
    """The model in the release's layout (one head), or an error saying what the layout cannot hold."""
    spec, config = get_spec(model.config.backbone), model.config
    if spec.family != "clip":
        raise ValueError(f"the official layout is a CLIP vision tower (transformers CLIPVisionModel); backbone "
                         f"{config.backbone!r} is {spec.family}: export it with --format hub or merged")
    if config.strategy != "lora" or not model.has_lora:
        raise ValueError(f"the official layout holds a LoRA model; this one is strategy {config.strategy!r}: "
                         f"export it with --format hub or merged")
    if config.head_type != "mlp":
        raise ValueError(f"the official layout's head is the 3-layer MLP (mlp.fc1..fc3); this model's is "
                         f"{config.head_type!r}: export it with --format hub or merged")
    name = _one_head(model, head_name, "official")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        return percept_to_official_state_dict(state, head_name=name)
    except KeyError as err:          # a weight with no place in the release's layout (e.g. a convolutional stem)
        raise ValueError(f"the official layout cannot hold this model ({err.args[0]}): export it with --format "
                         f"hub or merged") from None


def format_problem(model: PerceptCLIP, fmt: str) -> str | None:
    """Why ``model`` cannot be exported in ``fmt`` (None when it can): the one rule export and the card follow."""
    if fmt != "official":
        return None if fmt in FORMATS else f"unknown export format {fmt!r}"
    try:
        official_state_dict(model, model.head_names()[0])
    except ValueError as err:
        return str(err)
    return None


def export_model(model: PerceptCLIP, fmt: str, out: str | os.PathLike, *, head_name: str | None = None,
                 card: str | None = None, scoring: ModelScoring | None = None) -> Path:
    """Write ``model`` in format ``fmt`` (:data:`FORMATS`) at ``out`` (a folder for ``hub``, a file otherwise).
    ``scoring``: how its run scored (:mod:`percept.engine.scoring`), written beside the weights (hub, merged); without
    it a hub folder or merged file holds the network only, which ``percept predict`` refuses."""
    out = Path(out)
    if fmt == "hub":
        out.mkdir(parents=True, exist_ok=True)
        if card is not None:
            (out / "README.md").write_text(card, encoding="utf-8")    # save_pretrained keeps an existing card
        model.save_pretrained(out)
        if scoring is not None:
            write_hub_scoring(out, scoring)
        return out
    if fmt == "official":
        state = official_state_dict(model, head_name)
        with atomic_path(out) as tmp:
            torch.save(state, tmp)
        return out
    if fmt == "merged":
        meta = merged_metadata(model, scoring.to_json() if scoring is not None else None)
        with atomic_path(out) as tmp:
            save_file(merged_state_dict(model), str(tmp), metadata=meta)
        return out
    raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")


def export_run(run_dir: str | os.PathLike, fmt: str, out: str | os.PathLike, *, head_name: str | None = None,
               backbone_weights: str | os.PathLike | None = None) -> Path:
    """Export a finished run's best weights (``percept export RUN --format F --out PATH``). ``out`` may not lie
    inside the run directory: a hub folder there would overwrite the run's own ``config.json``."""
    run = finished_run(run_dir)
    target, home = Path(out).resolve(), run.path.resolve()
    if target == home or home in target.parents:
        raise ValueError(f"--out {out} lies inside the run directory {run.path}, whose files it would overwrite; "
                         f"export to a folder or file outside it")
    model = run.load_model(**({"weights_path": os.fspath(backbone_weights)} if backbone_weights else {}))
    scoring = ModelScoring.from_run_config(run.read_config())
    card = model_card(run, model) if fmt == "hub" else None
    return export_model(model, fmt, out, head_name=head_name, card=card, scoring=scoring)


def push_run(run_dir: str | os.PathLike, repo_id: str, *, private: bool = False, token: str | None = None,
             api=None) -> str:
    """Upload a finished run in the hub format to ``repo_id`` (created if needed); the token comes from the usual
    Hugging Face places (``HF_TOKEN``, ``hf auth login``) unless given. Returns the commit URL."""
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="percept-push-") as folder:
        export_run(run_dir, "hub", folder)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            commit = api.upload_folder(folder_path=folder, repo_id=repo_id, repo_type="model", commit_message=(
                f"PerceptCLIP run {Path(run_dir).name} (percept export --format hub)"))
        except Exception as err:          # no network, no token, no rights: huggingface_hub's and requests' errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RuntimeError(f"could not upload to the hub repo {repo_id!r} ({type(err).__name__}: {first}); check "
                               f"the network and your token (`hf auth login` or HF_TOKEN), or export the folder with "
                               f"`percept export {run_dir} --format hub --out DIR` and upload it later") from None
    return str(getattr(commit, "commit_url", commit))


def model_card(run: RunDir, model: PerceptCLIP | None = None) -> str:
    """The hub model card of a finished run (:func:`percept.study.export.render_model_card`), listing the export
    formats this model fits (:func:`format_problem`)."""
    model = model if model is not None else run.load_model()
    problems = {fmt: format_problem(model, fmt) for fmt in FORMATS}
    return render_model_card(run, official_problem=problems["official"])
