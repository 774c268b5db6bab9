"""``percept bench``: training/inference/data throughput of the fast path and of the official-style
reference path, measured side by side in one process, plus projected wall times for the paper's tables.

What is measured (each for ``steps`` timed iterations after ``warmup`` untimed ones; on GPU with CUDA
events around the timed iterations after a ``synchronize``, on CPU with ``perf_counter``):

``train_synthetic``          fast path on random tensors already on the device: percept model (timm, split
                             q/k/v, SDPA attention, peft LoRA), bf16 autocast on GPU, fused AdamW on GPU,
                             channels-last input, frozen weights pre-cast to bf16 (``frozen_bf16``: the
                             values autocast would compute anyway), optional ``torch.compile`` (a failure
                             falls back to eager and the reason is recorded). No host syncs in the loop.
``train_pipeline``           the same with the real data pipeline of ``percept train`` today: PIL decode +
                             torchvision transforms in DataLoader workers (float32 crops, pinned memory).
``train_cache_gpu_augment``  the same with the fast pipeline: pre-resized uint8 image cache
                             (:mod:`percept.data.cache`), integer crops in the workers, flips + normalisation
                             on the device (:mod:`percept.engine.gpu_augment`, exactly equal to the torchvision path).
``inference``                forward passes at ``eval_batch_size`` (eval mode, inference mode, autocast).
``data_pil`` / ``data_cache_gpu_augment``  the two pipelines alone (batches delivered to the device).
``reference_*``              the official-style model (transformers ``CLIPVisionModel`` + peft, eager
                             attention, fp32, ``torch.optim.AdamW`` defaults): on random tensors and with a
                             plain PIL DataLoader (same dataset, transforms, workers; no pinning). If it runs
                             out of memory at ``batch_size`` its batch is halved until it fits (recorded).

Ratios: ``speedup.train_synthetic`` = fast/reference on random tensors (the model alone);
``speedup.end_to_end`` = ``train_cache_gpu_augment`` / ``reference_pipeline``.

FLOPs: counted analytically from the encoder's sizes (:func:`model_flops`), a multiply-add = 2 FLOPs.
For ViT-L/14 at 224 the linear layers (patch embedding, q/k/v/out projections, MLPs) give 155.5 GFLOP per
image forward; the attention matmuls (QKᵀ and AV) add 6.5 GFLOP (162.0 in all), LoRA 1.2, the projection
and head < 0.01. Training with a frozen base and LoRA ≈ 2× forward, not 3×: backward needs the input
gradient of every layer (≈ 1× forward) but weight gradients only for LoRA and the head; the attention
matmuls need both operand gradients (2×); the patch embedding needs none. ``mfu`` = achieved FLOP/s /
the GPU's dense bf16 peak (:data:`PEAK_BF16_TFLOPS`), when the GPU is in the table.

Projections (:func:`project_tables`): images processed per run = epochs × training items per epoch (images
× train fraction × IQA replicas) + validation every epoch (× 15 crops for IQA) + one final val/test
evaluation, divided by the measured training and inference rates. Grids: IQA (Table 1) 10 splits × 4
learning rates per dataset; LaMem and EmotionROI 5 splits, EmoSet 1 split, × 4 learning rates (the grid
of §3.1, ``percept.study.sweep.LR_GRID``). Two epoch counts: the cap (40) and an early-stopping "typical" value
(default 20 = a best epoch near 8 + patience 12; an assumption, not a measurement — replace it by the
epochs of real runs). 8 GPUs: runs are independent (``percept sweep`` runs one per GPU), so wall time
= max(total / 8, the longest single run).

Modules: :mod:`~percept.study.bench.timing` (timed loops, peak memory, one step), :mod:`~percept.study.bench.measurements`
(one function per measurement), :mod:`~percept.study.bench.flops` (FLOPs, MFU), :mod:`~percept.study.bench.projection`
(wall times of the paper's grids), :mod:`~percept.study.bench.run` (:func:`benchmark`, the precision check),
:mod:`~percept.study.bench.gpu_check` (``make gpu-check``: every GPU number in one command), :mod:`~percept.study.bench.cli`.
"""
from .cli import main
from .flops import PEAK_BF16_TFLOPS, model_flops, peak_bf16_tflops
from .projection import FRACTIONS, PAPER_TABLES, project_tables
from .run import (
           PRECISION_TOLERANCE,
           TARGETS,
           add_arguments,
           benchmark,
           compare_precisions,
           format_table,
           run_from_args,
)
from .timing import CyclingSampler, time_loop, train_step

__all__ = ["benchmark", "compare_precisions", "format_table", "add_arguments", "run_from_args", "main", "model_flops",
           "peak_bf16_tflops", "project_tables", "time_loop", "train_step", "CyclingSampler", "PEAK_BF16_TFLOPS",
           "FRACTIONS", "PAPER_TABLES", "PRECISION_TOLERANCE", "TARGETS"]
