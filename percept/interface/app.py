"""``percept app``: an interactive demo (Gradio) — upload images, get every model's scores; for one image, the
CLS attention maps of the most important heads, fine-tuned vs original and their difference (paper §6).

* ``percept app`` (no model): the embedded demo runs ``percept notebooks`` (``make demo``) trains (IQA, memorability, emotion on the
  synthetic sets, ``tiny_clip_prior``): no network. ``percept app --model official-iqa --model RUN_DIR ...``:
  any runs, hub folders or official checkpoints.
* In JupyterLab: ``percept.interface.app.launch(inline=True)``; on a Hugging Face Space: the repository's ``app.py``.
* What it computes lives in :mod:`percept.interface.app_models` (scores equal ``percept predict``'s; bad uploads become
  messages); this module draws it (:func:`emotion_bars`, :func:`attention_figure`) and builds the page
  (:func:`build_app`). Needs the ``app`` extra: ``pip install 'perceptclip[app]'``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..study.analysis import plot_attention_gallery
from .app_models import (  # noqa: F401
    MAX_PIXELS,
    AppModel,
    attention_rows,
    check_image,
    demo_runs,
    example_images,
    load_models,
    predict_with,
    score_images,
)

DEFAULT_CONCURRENCY = 4      # requests served at once; inference itself is serialised per model (its lock)
MAX_UPLOAD = "50mb"          # per uploaded file (Gradio refuses larger ones before they are stored)
CACHE_LIFETIME = (3600, 3600)    # uploads are deleted hourly, once an hour old (Gradio's delete_cache)
TASK_MEANING = {"iqa": "quality (higher = better)", "memorability": "memorability (higher = more memorable)",
                "emotion": "emotion class and its probability"}


# ----------------------------------------------------------------------------- figures
def emotion_bars(app_models: list[AppModel], details: dict, image: str) -> Figure | None:
    """The class probabilities of ``image`` (a path in ``details``, :func:`score_images`' second output) as a
    bar chart, one panel per classification model; None when no model classifies or the image was not scored."""
    panels = []
    for m in app_models:
        rows = details.get(m.label)
        if m.kind != "classification" or rows is None:
            continue
        row = rows[(rows["image"] == str(image)) & (rows["error"] == "")]
        if len(row):
            panels.append((m, np.array([float(row.iloc[0][f"prob_{c}"]) for c in m.class_names])))
    if not panels:
        return None
    fig = Figure(figsize=(7, 2.6 * len(panels)), layout="constrained")
    for ax, (m, probs) in zip(np.atleast_1d(fig.subplots(len(panels), 1)), panels):
        colours = ["tab:orange" if i == probs.argmax() else "tab:blue" for i in range(len(probs))]
        ax.bar(m.class_names, probs, color=colours)
        ax.set_ylim(0, 1)
        ax.set_ylabel("probability")
        ax.set_title(f"{m.label}: {Path(image).name}", fontsize=10)
        ax.tick_params(axis="x", labelrotation=30)
    return fig


def attention_figure(app_model: AppModel, image: str | os.PathLike, examples: list[Path], k: int = 3):
    """(figure, caption): the CLS attention of ``app_model``'s top-``k`` heads on ``image`` — fine-tuned, original
    encoder (LoRA disabled), difference — with :func:`percept.study.analysis.plot_attention_gallery`."""
    crop, rows, where = attention_rows(app_model, image, examples, k)
    fig = plot_attention_gallery([crop], rows, labels=[Path(image).name],
                                 denormalize=app_model.model.normalization,
                                 title=f"{app_model.label}: {Path(image).name}",
                                 original_label="original (LoRA off)")
    caption = (f"The {len(rows)} most important heads of **{app_model.label}** (uniform-CLS ablation, paper §6), "
               f"importance measured on {where}. Red: more attention after fine-tuning.")
    return fig, caption


# ----------------------------------------------------------------------------- the page
def _header(app_models: list[AppModel]) -> str:
    lines = ["# PerceptCLIP demo", "Upload one or several images (or use the examples): each model scores them. "
             "Pick an image below the table for its attention maps.", ""]
    for m in app_models:
        lines.append(f"* **{m.label}** — {TASK_MEANING.get(m.task, m.kind)}; from `{_short(m.source)}`")
    demo = [m.label for m in app_models if m.notice]
    if demo:
        lines.append(f"\n**{', '.join(demo)}: demo model{'s' if len(demo) > 1 else ''}**, adapted only on generated "
                     f"images whose labels come from the generator, **not human judgements**: the recipe in "
                     f"miniature, not PerceptCLIP's scores; they say little about photographs.")
    return "\n".join(lines)


def _short(source: str, parts: int = 4) -> str:
    """A run directory's last ``parts`` components (dataset/variant/split/lr), enough to tell runs apart."""
    path = Path(source)
    return str(Path("…", *path.parts[-parts:])) if len(path.parts) > parts + 1 else source


def build_app(models=None, *, runs_dir=None, app_models: list[AppModel] | None = None, examples_dir=None,
              top_k: int = 3, max_pixels: int = MAX_PIXELS):
    """The Gradio page (``gr.Blocks``, queued) for ``models`` (see :func:`load_models`; None: the demo runs), or
    already loaded ``app_models``. Its ``/score`` endpoint takes a list of files."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr  # gradio: the app extra
    app_models = app_models if app_models is not None else load_models(models, runs_dir)
    examples = example_images(examples_dir)
    by_label = {m.label: m for m in app_models}

    def score(files):
        try:
            table, details, messages = score_images(app_models, files, max_pixels)
        except Exception as err:     # anything unforeseen: a message, and the server keeps serving
            return None, f"**Error:** {err}", gr.update(choices=[], value=None), {}
        for message in messages:
            gr.Warning(message)
        status = f"Scored {len(table)} of {len(files or [])} file(s) with {len(app_models)} model(s)."
        status += "".join(f"\n* ⚠ {m}" for m in messages)
        names = {Path(p).name: p for p in (details[app_models[0].label]["image"] if app_models else [])
                 if Path(p).name in set(table["image"])}
        state = {"paths": {n: str(p) for n, p in names.items()}, "details": details}
        first = next(iter(names), None)
        return table.round(4), status, gr.update(choices=list(names), value=first), state

    def show(name, label, k, state):
        path = (state or {}).get("paths", {}).get(name)
        if path is None:
            return None, None, "Upload an image to see its attention maps."
        bars = emotion_bars(app_models, state["details"], path)
        try:
            fig, caption = attention_figure(by_label[label], path, examples, int(k))
        except Exception as err:
            fig, caption = None, f"No attention maps: {err}"
        return bars, fig, caption

    with gr.Blocks(title="PerceptCLIP", delete_cache=CACHE_LIFETIME) as demo:
        gr.Markdown(_header(app_models))
        with gr.Row():
            files = gr.File(file_count="multiple", type="filepath", label="Images")
            with gr.Column():
                use_examples = gr.Button("Use the example images")
                gr.Markdown(f"Uploads over {max_pixels / 1e6:.0f} MP are refused; CMYK, alpha and 16-bit images "
                            f"are converted to 8-bit RGB.")
        status = gr.Markdown(elem_id="percept-status")
        table = gr.Dataframe(label="Scores", interactive=False, elem_id="percept-scores")
        state = gr.State({})
        with gr.Row():
            selected = gr.Dropdown(label="Image", choices=[], interactive=True)
            model = gr.Dropdown(label="Model for attention maps", choices=list(by_label),
                                value=app_models[0].label if app_models else None)
            k = gr.Slider(1, 5, value=top_k, step=1, label="Top heads")
        bars = gr.Plot(label="Emotion probabilities", visible=any(m.kind == "classification" for m in app_models),
                       format="png")
        attention = gr.Plot(label="CLS attention: fine-tuned, original, difference", format="png")
        caption = gr.Markdown()
        scored = files.change(score, [files], [table, status, selected, state], api_name="score")
        scored.then(show, [selected, model, k, state], [bars, attention, caption])
        use_examples.click(lambda: [str(p) for p in examples], None, files, api_name=False)
        for control in (selected, model):
            control.input(show, [selected, model, k, state], [bars, attention, caption], api_name=False)
        k.release(show, [selected, model, k, state], [bars, attention, caption], api_name=False)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    demo.examples_folder = examples[0].parent.parent
    return demo


def launch(models=None, inline: bool = False, share: bool = False, server_name: str | None = None,
           server_port: int | None = None, *, runs_dir=None, **kwargs):
    """Build and serve the app (``inline=True``: inside a JupyterLab/Jupyter output cell). ``kwargs`` go to
    ``gr.Blocks.launch`` (e.g. ``prevent_thread_lock=True``)."""
    demo = build_app(models, runs_dir=runs_dir)
    allowed = [str(demo.examples_folder), *kwargs.pop("allowed_paths", [])]
    kwargs.setdefault("max_file_size", MAX_UPLOAD)
    return demo.launch(inline=inline, share=share, server_name=server_name, server_port=server_port,
                       allowed_paths=allowed, **kwargs)
