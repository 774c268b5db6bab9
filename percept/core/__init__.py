"""Layer 1, core: what every other layer stands on, torch-free except the checkpoint files.

The task registry (``tasks``), configuration fields as command-line options (``options``), atomic files
(``files``), the package's data and the user's workspace (``resources``), the paper's metrics (``metrics``),
image loading with its bounds and the CLIP statistics (``images``), safetensors checkpoints (``checkpoint``).
"""
