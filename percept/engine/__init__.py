"""Layer 4, engine: training, evaluation and scoring.

Device and precision (``runtime``, ``distributed``), losses (``losses``, ``multitask``), sampling and device
augmentation (``sampling``, ``gpu_augment``), run directories and their status (``runs``), the training
configuration and loop (``train_config``, ``train``, ``head_finetune``), trackers (``tracking``), evaluation
(``evaluate``), how a model scores an image (``scoring``), prediction (``predict``), the pyiqa-style metric
(``metric``) and the demo prior's pre-training (``prior``).
"""
