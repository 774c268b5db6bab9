"""``percept bench`` itself: :func:`benchmark` runs the measurements and derives speed-ups, MFU, projections
and the performance targets; :func:`compare_precisions` is the bf16 numerics check; the table and the CLI."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ...core.files import atomic_write_text
from ...core.tasks import get_task
from ...data.sources import DataConfig, dataset_task
from ...engine.runtime import resolve_device, resolve_workers
from ...engine.train import TrainConfig, train
from ...model.perceptclip import ModelConfig
from .flops import mfu, model_flops
from .measurements import (
    bench_sources,
    build_fast_path,
    cached_dataset,
    measure_fast_path,
    measure_reference,
)
from .projection import project_tables
from .timing import free_memory, rate_of

TARGETS = {   # the performance targets: ViT-L/14 LoRA on one H100 at batch 128
    "train_images_per_s": 1300.0, "speedup_end_to_end": 4.0, "inference_images_per_s": 3000.0,
    "data_images_per_s": 2000.0}


def benchmark(backbone: str = "tiny_clip", batch_size: int = 32, precision: str = "auto", device: str = "auto",
              steps: int = 20, warmup: int = 5, compile: bool = False, reference: bool = True,
              data_root: str | None = None, *, dataset: str = "synthetic_iqa", eval_batch_size: int | None = None,
              num_workers: int | None = None, channels_last: bool | None = None, frozen_bf16: bool | None = None,
              max_images: int = 2048, cache_dir: str | None = None, typical_epochs: int = 20, seed: int = 0,
              data: bool = True, precision_check_epochs: int = 0, out: str | os.PathLike | None = None,
              compile_backend: str = "inductor", log=print) -> dict:
    """Measure the fast and the reference training paths side by side; returns (and writes to ``out``,
    atomically, as JSON) the record described in the module docstring.

    ``backbone``: a percept backbone (random weights: speed does not depend on their values).
    ``precision``/``device``: as ``percept train`` (auto = bf16 on GPU, fp32 on CPU). ``data_root``: the
    dataset folder (default: the embedded synthetic IQA set, generated in a temporary folder);
    ``max_images`` caps the training images used. ``num_workers`` default: :func:`percept.engine.runtime.resolve_workers`.
    ``channels_last`` and ``frozen_bf16`` default to on for GPU bf16. ``data=False`` skips the data-pipeline
    measurements (random tensors only). ``precision_check_epochs`` > 0 adds :func:`compare_precisions`
    (a short fp32 and bf16 training run of ``backbone`` on ``dataset``) as ``precision_check``.
    """
    quiet = log is None
    log = (lambda *a, **k: None) if quiet else log
    device, precision = resolve_device(device, precision)
    cuda = device.type == "cuda"
    if steps < 1 or warmup < 0 or batch_size < 2:
        raise ValueError("need steps >= 1, warmup >= 0 and batch_size >= 2 (the PLCC loss needs two samples)")
    channels_last = cuda if channels_last is None else bool(channels_last)
    frozen_bf16 = (cuda and precision == "bf16") if frozen_bf16 is None else bool(frozen_bf16)
    if frozen_bf16 and precision != "bf16":
        raise ValueError("frozen_bf16 needs precision bf16 (the frozen weights are only cast under autocast)")
    workers = resolve_workers(num_workers, device)
    eval_batch_size = eval_batch_size or (max(256, batch_size) if cuda else batch_size)
    if cuda:
        torch.backends.cudnn.benchmark = True

    settings = {"backbone": backbone, "batch_size": batch_size, "eval_batch_size": eval_batch_size,
                "precision": precision, "device": str(device), "steps": steps, "warmup": warmup, "compile": compile,
                "channels_last": channels_last, "frozen_bf16": frozen_bf16, "num_workers": workers,
                "fused_adamw": cuda, "attention": "torch SDPA (timm split q/k/v)", "seed": seed,
                "weights": "random (throughput does not depend on weight values)",
                "float32_matmul_precision": torch.get_float32_matmul_precision()}
    result: dict = {"format": "percept-bench-v1", "settings": settings, "environment": _environment(device)}
    log(f"percept bench: {backbone}, batch {batch_size}, {precision}, {device} "
        f"({result['environment'].get('gpu') or result['environment']['cpu']})")

    fast, fast_settings = build_fast_path(
        backbone, batch_size=batch_size, eval_batch_size=eval_batch_size, device=device, precision=precision,
        steps=steps, warmup=warmup, workers=workers, seed=seed, channels_last=channels_last,
        frozen_bf16=frozen_bf16, compile=compile, log=log, compile_backend=compile_backend)
    settings.update(fast_settings)
    flops = model_flops(fast.model)
    result["model"] = {"parameters": fast.model.parameter_counts(), "flops_per_image": flops,
                       "img_size": list(fast.model.img_size)}
    measurements: dict = {}
    result["measurements"] = measurements
    pil = measure_fast_path(fast, measurements, log=log, open_data=lambda: _open_data(
        result, dataset, data_root, max_images, cache_dir, log) if data else (None, None))
    del fast
    free_memory(device)
    if reference:
        measure_reference(measurements, backbone, batch_size, steps, warmup, device, pil, workers, seed, log)

    _derive(result, flops, backbone, batch_size, precision, cuda, typical_epochs)
    if precision_check_epochs > 0:
        result["precision_check"] = _precision_check(backbone, dataset, data_root, precision_check_epochs,
                                                     batch_size, device, seed, workers, log)
    if not quiet:
        log(format_table(result))
    if out is not None:
        atomic_write_text(out, json.dumps(result, indent=2, default=_json_default) + "\n")
    return result


def _open_data(result: dict, dataset: str, data_root, max_images: int, cache_dir, log):
    """(PIL dataset, cached dataset) of ``dataset``'s training images, or (None, None) with the error recorded."""
    try:
        source, pil, result["data"] = bench_sources(dataset, data_root, max_images, log)
        cached, info = cached_dataset(source, pil, cache_dir)
        result["data"].update(info)
        return pil, cached
    except Exception as err:
        result["data"] = {"error": f"{type(err).__name__}: {err}"[:1000]}
        log(f"data: FAILED {result['data']['error']}")
        return None, None


def _derive(result: dict, flops: dict, backbone: str, batch_size: int, precision: str, cuda: bool,
            typical_epochs: int) -> None:
    """Speed-ups, MFU, projected wall times and the performance targets from the measurements."""
    m = result["measurements"]
    result["speedup"] = _speedups(m)
    result["mfu"] = mfu(m, flops, result["environment"].get("gpu"), precision, cuda)
    train_from = "train_cache_gpu_augment" if rate_of(m, "train_cache_gpu_augment") else "train_synthetic"
    result["projection"] = project_tables(rate_of(m, train_from), rate_of(m, "inference"),
                                          typical_epochs=typical_epochs)
    result["projection"]["measured_on"] = {"backbone": backbone, "device": result["environment"].get("gpu") or "cpu",
                                           "train_rate_from": train_from}
    result["targets"] = _targets(result, backbone, batch_size, cuda)


def _precision_check(backbone, dataset, data_root, epochs, batch_size, device, seed, workers, log) -> dict:
    try:
        check = compare_precisions(backbone, dataset, data_root, epochs=epochs, batch_size=batch_size,
                                   device=str(device), seed=seed, num_workers=workers)
        log(f"precision check: test differences bf16 - fp32 {check['test_differences_bf16_minus_fp32']}")
        return check
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"[:1000]}


def _speedups(m: dict) -> dict:
    def ratio(a, b):
        fa, fb = rate_of(m, a), rate_of(m, b)
        return fa / fb if fa and fb else None
    return {"train_synthetic": ratio("train_synthetic", "reference_synthetic"),
            "end_to_end": ratio("train_cache_gpu_augment", "reference_pipeline"),
            "pipeline_vs_reference_pipeline": ratio("train_pipeline", "reference_pipeline"),
            "cache_gpu_augment_vs_pil_training": ratio("train_cache_gpu_augment", "train_pipeline")}


def _targets(result: dict, backbone: str, batch_size: int, cuda: bool) -> dict:
    m = result["measurements"]
    applicable = cuda and backbone == "clip_vit_l14" and batch_size == 128 and \
        "H100" in (result["environment"].get("gpu") or "")
    values = {"train_images_per_s": rate_of(m, "train_cache_gpu_augment") or rate_of(m, "train_synthetic"),
              "speedup_end_to_end": result["speedup"]["end_to_end"],
              "inference_images_per_s": rate_of(m, "inference"),
              "data_images_per_s": rate_of(m, "data_cache_gpu_augment")}
    return {"applicable": applicable,
            "note": "the targets apply to ViT-L/14, batch 128, one H100",
            **{k: {"target": t, "value": values[k], "met": None if values[k] is None else values[k] >= t}
               for k, t in TARGETS.items()}}


def _environment(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads()}
    for module in ("timm", "peft", "transformers", "torchvision"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2 ** 30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), flash_sdp=torch.backends.cuda.flash_sdp_enabled())
    return info


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


PRECISION_TOLERANCE = 0.02   # |bf16 - fp32| allowed on each test metric of a short run (SRCC, PLCC, accuracy)


def compare_precisions(backbone: str = "tiny_clip", dataset: str = "synthetic_iqa", data_root: str | None = None,
                       *, epochs: int = 3, batch_size: int = 32, lr: float = 1e-4, device: str = "auto",
                       seed: int = 0, test_crops: int = 15, pretrained: bool = False, num_workers: int = 0,
                       run_dir: str | os.PathLike | None = None, tolerance: float = PRECISION_TOLERANCE) -> dict:
    """Train the same short run (``epochs`` epochs, no early stop) in fp32 and in bf16 autocast with the
    same seed and compare the test metrics: ``within_tolerance`` says whether every compared metric differs
    by at most ``tolerance``. On GPU this is the bf16 numerics check; on CPU (bf16 autocast
    exists there too) it exercises the same code."""
    root = data_root or os.path.join(tempfile.gettempdir(), "percept-bench-synthetic")
    run_dir = Path(run_dir or tempfile.mkdtemp(prefix="percept-precision-"))
    task = dataset_task(dataset)
    metrics = ("accuracy",) if get_task(task).is_classification else ("srcc", "plcc", "plcc_logistic")
    runs_ = {}
    for precision in ("fp32", "bf16"):
        config = TrainConfig(data=[DataConfig(dataset, str(root))], model=ModelConfig(backbone=backbone,
                             pretrained=pretrained), lr=lr, batch_size=batch_size, max_epochs=epochs, patience=epochs,
                             test_crops=test_crops, precision=precision, device=device, seed=seed,
                             num_workers=num_workers, quiet=True)
        t0 = time.perf_counter()
        result = train(config, run_dir / precision)
        runs_[precision] = {"test": next(iter(result["test"].values())), "val_score": result["val_score"],
                            "best_epoch": result["best_epoch"], "seconds": round(time.perf_counter() - t0, 2)}
    differences = {k: runs_["bf16"]["test"][k] - runs_["fp32"]["test"][k] for k in metrics
                   if k in runs_["bf16"]["test"] and k in runs_["fp32"]["test"]}
    ok = all(math.isfinite(v) and abs(v) <= tolerance for v in differences.values())
    return {"backbone": backbone, "dataset": dataset, "epochs": epochs, "batch_size": batch_size, "lr": lr,
            "device": str(resolve_device(device)[0]), "runs": runs_, "test_differences_bf16_minus_fp32": differences,
            "tolerance": tolerance, "within_tolerance": ok, "run_dir": str(run_dir)}


def format_table(result: dict) -> str:
    """The human-readable summary printed by ``percept bench``."""
    m = result["measurements"]
    lines = [f"{'measurement':<26}{'images/s':>12}{'ms/step':>10}{'peak GiB':>10}  note"]
    for name in ("train_synthetic", "train_pipeline", "train_cache_gpu_augment", "inference", "data_pil",
                 "data_cache_gpu_augment", "reference_synthetic", "reference_pipeline"):
        if name not in m:
            continue
        r = m[name]
        if "error" in r:
            lines.append(f"{name:<26}{'-':>12}{'-':>10}{'-':>10}  {r['error'][:60]}")
            continue
        ms = f"{r['ms_per_step']:.1f}" if "ms_per_step" in r else "-"
        peak = f"{r['peak_memory_gib']:.2f}" if r.get("peak_memory_gib") is not None else "-"
        lines.append(f"{name:<26}{r['images_per_s']:>12,.1f}{ms:>10}{peak:>10}  {r.get('note', '')}")
    s = result["speedup"]
    fmt = lambda v: f"{v:.2f}x" if v else "-"   # noqa: E731
    lines.append(f"speed-up vs reference: model {fmt(s['train_synthetic'])}, end to end {fmt(s['end_to_end'])}")
    mfu = result["mfu"]
    if mfu.get("peak_bf16_tflops") and mfu.get("train_synthetic_tflops"):
        lines.append(f"training {mfu['train_synthetic_tflops']:.0f} TFLOP/s = "
                     f"{100 * mfu['train_synthetic_fraction_of_peak']:.1f}% of {mfu['peak_bf16_tflops']:.0f} "
                     f"(bf16 peak); {mfu['train_flops_per_image'] / 1e9:.1f} GFLOP/image per step")
    else:
        lines.append(f"{mfu['train_flops_per_image'] / 1e9:.2f} GFLOP/image per training step, "
                     f"{mfu['forward_flops_per_image'] / 1e9:.2f} forward")
    proj = result["projection"]
    if "tables" in proj:
        lines.append(f"projected wall time, hours at the measured rates ({proj['measured_on']['backbone']}, "
                     f"{proj['measured_on']['device']}): max epochs / typical, 1 GPU | 8 GPUs")
        for table, t in proj["tables"].items():
            lines.append(f"  {table:<30} {t['runs']:>4} runs  {t['hours_max_epochs_1gpu']:>10.2f} / "
                         f"{t['hours_typical_epochs_1gpu']:<10.2f} | {t['hours_max_epochs_8gpu']:>9.2f} / "
                         f"{t['hours_typical_epochs_8gpu']:.2f}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``percept bench`` options (shared by ``python -m percept.study.bench`` and ``percept bench``)."""
    parser.add_argument("--backbone", default="tiny_clip", help="percept backbone (clip_vit_l14 for the paper's)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-batch-size", type=int, default=None, help="default: max(256, batch) on GPU")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=20, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations before each measurement")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (falls back to eager)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the official-style reference path")
    parser.add_argument("--no-data", dest="data", action="store_false", help="random tensors only")
    parser.add_argument("--dataset", default="synthetic_iqa", help="dataset for the data-pipeline measurements")
    parser.add_argument("--data-root", default=None, help="its folder (default: a generated synthetic IQA set)")
    parser.add_argument("--max-images", type=int, default=2048, help="training images used at most")
    parser.add_argument("--cache-dir", default=None, help="where the uint8 image cache is built (default: tmp)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default 0 on CPU, "
                        "min(16, CPUs) on GPU)")
    parser.add_argument("--channels-last", dest="channels_last", action="store_true", default=None)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--frozen-bf16", dest="frozen_bf16", action="store_true", default=None)
    parser.add_argument("--no-frozen-bf16", dest="frozen_bf16", action="store_false")
    parser.add_argument("--typical-epochs", type=int, default=20, help="epochs assumed for early-stopped runs")
    parser.add_argument("--precision-check", type=int, default=0, metavar="EPOCHS",
                        help="also train EPOCHS epochs in fp32 and in bf16 and compare the test metrics")
    parser.add_argument("--out", default=None, help="write the JSON record here")
    return parser


def run_from_args(args: argparse.Namespace) -> dict:
    return benchmark(backbone=args.backbone, batch_size=args.batch_size, precision=args.precision,
                     device=args.device, steps=args.steps, warmup=args.warmup, compile=args.compile,
                     reference=args.reference, data_root=args.data_root, dataset=args.dataset,
                     eval_batch_size=args.eval_batch_size, num_workers=args.workers,
                     channels_last=args.channels_last, frozen_bf16=args.frozen_bf16, max_images=args.max_images,
                     cache_dir=args.cache_dir, typical_epochs=args.typical_epochs, data=args.data,
                     precision_check_epochs=args.precision_check, out=args.out)
