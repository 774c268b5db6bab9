"""Share a trained run (``percept export`` / ``percept push``): three formats and a generated model card.

* ``hub`` — a folder for the Hugging Face hub: ``config.json`` + ``model.safetensors`` (what
  :meth:`PerceptCLIP.save_pretrained` writes: LoRA + heads for a pretrained backbone, ~11 MB for ViT-L/14),
  ``preprocessor_config.json`` (the run's test preprocessing and what each head predicts,
  :mod:`percept.scoring`; its SHA-256 in ``config.json``) and a ``README.md`` model card (:func:`model_card`).
  ``percept predict --model DIR``, ``create_metric(DIR)`` and the app score with it exactly as the run did; the
  bare network loads with ``percept.PerceptCLIP.from_pretrained(dir_or_repo)``.
* ``official`` — one ``.pth`` state dict in the authors' release layout (transformers ``CLIPVisionModel`` + peft
  LoRA on ``q_proj/k_proj/v_proj`` + ``proj`` + ``mlp.fc1..fc3``; :mod:`percept.official_layout`), so that the
  authors' modeling code and Gradio demo load a model trained here. It holds the whole encoder (~1.2 GB for
  L/14) and one head; only a CLIP backbone with LoRA and the MLP head fit in it. A plain dict of tensors written
  with ``torch.save`` (readable with ``torch.load(weights_only=True)``): that is the release's format.
* ``merged`` — one safetensors file: LoRA folded into the encoder, in timm's own layout (fused ``qkv``), the heads
  beside it, the architecture's timm arguments, the percept config and the run's scoring in its metadata
  (:mod:`percept.merged`): ``percept.load_merged(FILE)``, ``percept predict --model FILE``, or plain timm.

What a model can be exported to is decided in one place (:func:`format_problem`), which both ``export`` and the
model card ask.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from .backbones import get_spec
from .files import atomic_path
from .merged import MERGED_HEAD_PREFIX, merged_metadata, merged_state_dict  # noqa: F401  (MERGED_HEAD_PREFIX: API)
from .model import PerceptCLIP
from .model_card import render_model_card
from .official_layout import percept_to_official_state_dict
from .runs import RunDir
from .scoring import ModelScoring, write_hub_scoring

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
    ``scoring``: how its run scored (:mod:`percept.scoring`), written beside the weights (hub, merged); without
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
        from safetensors.torch import save_file
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
    from huggingface_hub import HfApi
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
    """The hub model card of a finished run (:func:`percept.model_card.render_model_card`), listing the export
    formats this model fits (:func:`format_problem`)."""
    model = model if model is not None else run.load_model()
    problems = {fmt: format_problem(model, fmt) for fmt in FORMATS}
    return render_model_card(run, official_problem=problems["official"])
