"""``percept bench --suite gpu-check --out DIR`` (= ``make gpu-check``): every GPU number the project reports, in
one command, for the moment a GPU machine is lent (minutes of it, by chance).

The steps, each on its own (a step that fails is recorded by name with its error and the others still run; a
step that would start after the time budget is recorded as skipped):

==================  ========================================================================================
``eager``           :func:`~percept.study.bench.run.benchmark` at the paper's setting (ViT-L/14 at 224 px, random
                    weights, LoRA r16, batch 128, bf16 on a GPU): training on device tensors, with the PIL and
                    the uint8-cache + device-augmentation pipelines, the pipelines alone, inference, the
                    official-style reference path (transformers + peft, fp32) and the ratio, MFU from the
                    analytic FLOPs, peak memory, projected wall time of every paper table on 1 and 8 GPUs
``compile``         the training and inference rates again under ``torch.compile``
``inference_merged``  forward passes with LoRA folded into the weights (``merge_lora``), batch >= 256
``iqa_eval_15_crops``  the IQA test protocol's rate: images per second with 15 crops each
``flop_counter``    ``torch.utils.flop_counter`` on one training step beside the analytic count (their ratio)
``profile``         ``torch.profiler`` of one training step: the top operators (``profile.txt``)
``bf16_vs_fp32``    the same short run in fp32 and in bf16 on the synthetic IQA set: the test metrics'
                    differences against the stated tolerance
==================  ========================================================================================

Writes ``DIR/gpu_check.json`` (every number), ``DIR/gpu_check.md`` (the table for the README's Performance section)
and ``DIR/profile.txt``, and prints the table last. The JSON and the table are rewritten after every step
(``"complete": false`` until the last), so that a run stopped by a time limit keeps the numbers it measured;
``steps`` (``--only A,B``) runs some of the steps only, e.g. a rerun of the failed ones into another folder.
Without a GPU it is a dry run (``tiny_clip``, a few steps, a minute or two on a CPU): ``tests/test_bench.py`` runs
it through ``tools/gpu_check.sh`` (what a lent GPU machine runs), so that the check cannot rot before a GPU comes.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import torch

from ... import __version__
from ...core.files import atomic_write_text
from ...data.synthetic import generate_synthetic_iqa
from ...engine.losses import get_loss
from ...engine.runtime import resolve_device
from ...model.perceptclip import build_model
from .flops import model_flops
from .run import _environment, _json_default, benchmark, compare_precisions
from .timing import (
    free_memory,
    infer,
    peak_bytes,
    rate,
    reset_peak,
    time_loop,
    train_step,
)

# The check on a GPU (<= 8 minutes on one H100, start-up aside) and its dry run on a CPU (< 2 minutes on 2 cores).
# ``references``: the synthetic IQA set's reference images (x 4 distortions x 5 levels); ``compile_backend``:
# torch.compile's (the dry run traces the graphs with aot_eager and generates no kernels: seconds, not a minute).
GPU_SETTINGS = {"backbone": "clip_vit_l14", "batch_size": 128, "eval_batch_size": 256, "steps": 20, "warmup": 5,
                "workers": 16, "max_images": 4096, "references": 12, "precision_epochs": 2,
                "precision_batch_size": 32, "compile_backend": "inductor", "budget_s": 7 * 60}
DRY_RUN_SETTINGS = {"backbone": "tiny_clip", "batch_size": 8, "eval_batch_size": 8, "steps": 2, "warmup": 1,
                    "workers": 0, "max_images": 40, "references": 8, "precision_epochs": 1,
                    "precision_batch_size": 8, "compile_backend": "aot_eager", "budget_s": 100}
CROPS = 15   # the IQA test protocol's crops per image (App. A.1)
VERSIONS_SHOWN = ("torch", "timm", "peft", "transformers")   # printed first and under the table
STEPS = ("eager", "compile", "inference_merged", "iqa_eval_15_crops", "flop_counter", "profile", "bf16_vs_fp32")


def _merged_inference(s: dict, device, precision: str) -> dict:
    """Forward passes of the model with LoRA folded into the q, k, v weights (the exported inference form)."""
    model = build_model(backbone=s["backbone"], pretrained=False).to(device).eval()
    model.merge_lora()
    x = torch.randn(s["eval_batch_size"], 3, *model.img_size, device=device)
    reset_peak(device)
    with torch.inference_mode():
        seconds = time_loop(lambda: infer(model, x, device, precision), s["steps"], s["warmup"], device)
    peak = peak_bytes(device)
    return {"images_per_s": rate(s["steps"] * s["eval_batch_size"], seconds), "batch_size": s["eval_batch_size"],
            "peak_memory_gib": None if peak is None else round(peak / 2**30, 2)}


def _iqa_eval_rate(s: dict, device, precision: str) -> dict:
    """The IQA test protocol: every image as 15 crops, their scores averaged; images (not crops) per second."""
    model = build_model(backbone=s["backbone"], pretrained=False).to(device).eval()
    model.merge_lora()
    images = max(1, s["eval_batch_size"] // CROPS)
    x = torch.randn(images * CROPS, 3, *model.img_size, device=device)

    def step():
        return infer(model, x, device, precision).float().view(images, CROPS, -1).mean(1)
    with torch.inference_mode():
        seconds = time_loop(step, s["steps"], s["warmup"], device)
    return {"images_per_s": rate(s["steps"] * images, seconds), "crops_per_image": CROPS,
            "images_per_batch": images}


def _training_step(s: dict, device, precision: str, batch_size: int):
    """(model, one closure running a training step) at ``batch_size``, random weights and inputs."""
    torch.manual_seed(0)
    model = build_model(backbone=s["backbone"], pretrained=False).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4,
                                  fused=device.type == "cuda")
    x = torch.randn(batch_size, 3, *model.img_size, device=device)
    y = torch.rand(batch_size, device=device)
    loss = get_loss("plcc")
    return model, lambda: train_step(model, optimizer, loss, x, y, device, precision)


def _flop_counter(s: dict, device, precision: str) -> dict:
    """torch's FLOP counter on one forward and one training step beside the analytic counts (FLOPs per image).
    torch counts the attention matmuls only for the fused GPU kernels it knows (flash, memory-efficient): on a CPU
    its forward is the analytic one without them."""
    from torch.utils.flop_counter import FlopCounterMode  # the FLOP count alone
    batch = 2
    model, step = _training_step(s, device, precision, batch)
    step()                                         # lazy initialisation outside the count
    with FlopCounterMode(display=False) as counter:
        step()
    x = torch.randn(batch, 3, *model.img_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as forward:
        model.eval()(x)
    analytic = model_flops(model)
    counted = counter.get_total_flops() / batch
    return {"counted_train_flops_per_image": counted, "analytic_train_flops_per_image": analytic["train_step"],
            "ratio_counted_to_analytic": counted / analytic["train_step"],
            "counted_forward_flops_per_image": forward.get_total_flops() / batch,
            "analytic_forward_flops_per_image": analytic["forward"],
            "analytic_attention_matmul_flops_per_image": analytic["forward_attention_matmuls"]}


def _profile(s: dict, device, precision: str, path: Path) -> dict:
    """``torch.profiler`` of one training step after a warm-up step: the top operators by self time."""
    from torch.profiler import ProfilerActivity, profile  # the profile step alone
    _, step = _training_step(s, device, precision, s["batch_size"])
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    table = events.table(sort_by=key, row_limit=20, max_name_column_width=60)
    atomic_write_text(path, f"# one training step: {s['backbone']}, batch {s['batch_size']}, {precision}, {device}\n"
                      + table + "\n")
    top = sorted(events, key=lambda e: getattr(e, key, 0), reverse=True)[:5]
    return {"file": str(path), "top_operators": [{"name": e.key, "self_ms": round(getattr(e, key, 0) / 1000, 3)}
                                                 for e in top]}


def gpu_check(out: str | os.PathLike, *, device: str = "auto", dry_run: bool | None = None,
              overrides: dict | None = None, steps: list[str] | None = None, log=print) -> dict:
    """Run the suite (module docstring) into folder ``out``; ``dry_run`` (default: no GPU) takes the CPU
    settings; ``overrides`` changes some of them; ``steps`` (default: all of :data:`STEPS`) names the steps to run.
    Returns the record written to ``out/gpu_check.json``."""
    unknown = sorted(set(steps or ()) - set(STEPS))
    if unknown:
        raise ValueError(f"unknown gpu-check step {', '.join(unknown)}; the steps are {', '.join(STEPS)}")
    chosen = set(steps or STEPS)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device, precision = resolve_device(device, "auto")
    dry = device.type != "cuda" if dry_run is None else dry_run
    s = {**(DRY_RUN_SETTINGS if dry else GPU_SETTINGS), **(overrides or {})}
    record = {"format": "percept-gpu-check-v1", "dry_run": dry, "settings": s, "precision": precision,
              "environment": _environment(device), "steps": {}, "failed": [], "skipped": [], "complete": False}
    if steps:
        record["steps_asked"] = [name for name in STEPS if name in chosen]
    env = record["environment"]
    log(f"percept gpu-check{' (dry run)' if dry else ''}: {s['backbone']}, batch {s['batch_size']}, {precision}, "
        f"{env.get('gpu') or env['cpu']}; " + ", ".join(f"{name} {env.get(name)}" for name in VERSIONS_SHOWN))
    # the synthetic IQA set of the data and bf16 steps: beside, not in, the results folder (it may be sent back)
    data_root = Path(tempfile.gettempdir()) / f"percept-gpu-check-synthetic-{s['references']}"
    if not (data_root / "manifest.csv").is_file():
        generate_synthetic_iqa(data_root, n_references=s["references"], seed=0)
    started = time.perf_counter()                  # the budget is the steps'

    def save() -> str:
        record["seconds"] = round(time.perf_counter() - started, 1)
        table = markdown_table(record)
        atomic_write_text(out / "gpu_check.json", json.dumps(record, indent=2, default=_json_default) + "\n")
        atomic_write_text(out / "gpu_check.md", table + "\n")
        return table

    def step(name: str, fn) -> None:
        if name not in chosen:
            return
        if time.perf_counter() - started > s["budget_s"]:
            record["skipped"].append(name)
            log(f"{name}: skipped (time budget of {s['budget_s']} s spent)")
            return
        t0 = time.perf_counter()
        try:
            record["steps"][name] = fn()
            log(f"{name}: done in {time.perf_counter() - t0:.0f} s")
        except Exception as err:                   # one failure never stops the others: it is named
            record["steps"][name] = {"error": f"{type(err).__name__}: {err}"[:1000]}
            record["failed"].append(name)
            log(f"{name}: FAILED {record['steps'][name]['error'][:200]}")
        free_memory(device)
        save()                                     # what is measured so far survives a time limit

    common = {"backbone": s["backbone"], "batch_size": s["batch_size"], "eval_batch_size": s["eval_batch_size"],
              "steps": s["steps"], "warmup": s["warmup"], "device": str(device), "num_workers": s["workers"],
              "log": None}
    step("eager", lambda: benchmark(**common, reference=True, data=True, data_root=str(data_root),
                                    max_images=s["max_images"]))
    step("compile", lambda: benchmark(**common, compile=True, reference=False, data=False,
                                      compile_backend=s["compile_backend"]))
    step("inference_merged", lambda: _merged_inference(s, device, precision))
    step("iqa_eval_15_crops", lambda: _iqa_eval_rate(s, device, precision))
    step("flop_counter", lambda: _flop_counter(s, device, precision))
    step("profile", lambda: _profile(s, device, precision, out / "profile.txt"))
    step("bf16_vs_fp32", lambda: compare_precisions(
        s["backbone"], "synthetic_iqa", str(data_root), epochs=s["precision_epochs"], batch_size=s["precision_batch_size"],
        device=str(device), test_crops=2 if dry else CROPS, run_dir=tempfile.mkdtemp(prefix="percept-gpu-check-")))
    record["complete"] = True
    log(save())
    return record


def _number(value, digits: int = 0, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def markdown_table(record: dict) -> str:
    """The README's Performance table: one row per number, with the device and the command."""
    steps, env = record["steps"], record["environment"]
    eager, compiled = steps.get("eager", {}), steps.get("compile", {})
    m, mc = eager.get("measurements", {}), compiled.get("measurements", {})
    rate_of = lambda ms, name: (ms.get(name) or {}).get("images_per_s")   # noqa: E731
    peak_of = lambda ms, name: (ms.get(name) or {}).get("peak_memory_gib")   # noqa: E731
    mfu = eager.get("mfu", {})
    flops = steps.get("flop_counter", {})
    check = steps.get("bf16_vs_fp32", {})
    rows = [
        ("training, eager (images/s; peak GiB)", f"{_number(rate_of(m, 'train_synthetic'), 1)}; "
         f"{_number(peak_of(m, 'train_synthetic'), 2)}"),
        ("training, torch.compile (images/s)", _number(rate_of(mc, "train_synthetic"), 1)),
        ("training, uint8 cache + device augmentation (images/s)", _number(rate_of(m, "train_cache_gpu_augment"), 1)),
        ("training, PIL pipeline (images/s)", _number(rate_of(m, "train_pipeline"), 1)),
        ("reference path, transformers + peft fp32 (images/s)", _number(rate_of(m, "reference_synthetic"), 1)),
        ("speed-up vs reference: model / end to end", f"{_number(eager.get('speedup', {}).get('train_synthetic'), 2, 'x')}"
         f" / {_number(eager.get('speedup', {}).get('end_to_end'), 2, 'x')}"),
        ("MFU, eager training (% of bf16 peak)", _number(100 * mfu["train_synthetic_fraction_of_peak"], 1, " %")
         if mfu.get("train_synthetic_fraction_of_peak") else "—"),
        ("FLOPs per training image: analytic / torch counter", f"{_number(flops.get('analytic_train_flops_per_image', 0) / 1e9 if flops.get('analytic_train_flops_per_image') else None, 1, ' G')}"
         f" / {_number(flops.get('counted_train_flops_per_image', 0) / 1e9 if flops.get('counted_train_flops_per_image') else None, 1, ' G')}"),
        ("inference, LoRA merged (images/s)", _number((steps.get("inference_merged") or {}).get("images_per_s"), 1)),
        ("inference, LoRA unmerged (images/s)", _number(rate_of(m, "inference"), 1)),
        ("IQA evaluation, 15 crops (images/s)", _number((steps.get("iqa_eval_15_crops") or {}).get("images_per_s"), 1)),
        ("data alone: PIL / uint8 cache (images/s)", f"{_number(rate_of(m, 'data_pil'), 1)} / "
         f"{_number(rate_of(m, 'data_cache_gpu_augment'), 1)}"),
        ("bf16 − fp32 test metrics (tolerance)", ", ".join(f"{k} {v:+.4f}" for k, v in
                                                          check.get("test_differences_bf16_minus_fp32", {}).items())
         + (f" (±{check['tolerance']})" if "tolerance" in check else "") if check.get("test_differences_bf16_minus_fp32")
         else "—"),
    ]
    tables = eager.get("projection", {}).get("tables", {})
    for name, t in tables.items():
        rows.append((f"projected hours, {name}: 1 GPU / 8 GPUs (max epochs)",
                     f"{t['hours_max_epochs_1gpu']:,.1f} / {t['hours_max_epochs_8gpu']:,.1f}"))
    device = env.get("gpu") or f"CPU ({env.get('cpu')})"
    head = (f"| {'dry run, ' if record['dry_run'] else ''}{record['settings']['backbone']}, batch "
            f"{record['settings']['batch_size']}, {record['precision']}, {device} | |")
    lines = [head, "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    for name in record["failed"]:
        lines.append(f"| FAILED: {name} | {record['steps'][name]['error'][:120]} |")
    for name in record["skipped"]:
        lines.append(f"| skipped (time budget): {name} | |")
    if not record.get("complete", True):
        lines.append(f"| not finished: written after step {list(record['steps'])[-1] if record['steps'] else '(none)'}"
                     " | the later steps did not run (stopped?) |")
    asked = f" --only {','.join(record['steps_asked'])}" if record.get("steps_asked") else ""
    lines.append(f"\n`percept bench --suite gpu-check --out DIR{asked}` (= `make gpu-check`), "
                 f"{record.get('seconds', 0):.0f} s; percept {__version__}, "
                 + ", ".join(f"{name} {env.get(name, '')}" for name in VERSIONS_SHOWN))
    return "\n".join(lines)
