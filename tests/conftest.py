"""Shared fixtures. Tests never touch the network: the HF hub is forced offline with an empty cache."""
import os
import sys
import tempfile
from pathlib import Path

# Must happen before huggingface_hub is imported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="percept-test-hf-")

import pytest  # noqa: E402
import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tools"))   # the research diagnostics kept beside the package (their tests here)


def shared_data_root() -> Path | None:
    """``$PERCEPT_DATA_ROOT`` or ``../shared/data`` beside the repository, if present."""
    root = Path(os.environ.get("PERCEPT_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
    return root if root.is_dir() else None


@pytest.fixture
def data_root() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("real dataset files not found: set PERCEPT_DATA_ROOT or place them in ../shared/data")
    return root


@pytest.fixture
def tiny_timm_weights(tmp_path) -> Path:
    """A timm-format (fused qkv) state dict of the tiny CLIP architecture, as a local weights file."""
    import timm
    from safetensors.torch import save_file

    from percept.model.backbones import get_spec

    spec = get_spec("tiny_clip")
    torch.manual_seed(123)
    vit = timm.create_model(spec.timm_name, pretrained=False, **spec.timm_kwargs)
    path = tmp_path / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    return path


def fake_hub_file(cache: Path, repo_id: str, filename: str, data: bytes = b"weights") -> Path:
    """A file in the layout of huggingface_hub's cache (models--ORG--NAME/{refs/main, snapshots/<rev>/FILE}), so
    that offline loading finds it without any network."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True, exist_ok=True)
    path = repo / "snapshots" / "abc123" / filename
    path.write_bytes(data)
    return path


def randomize_lora(model) -> None:
    """LoRA's B starts at zero (a no-op); give it values so that tests can see LoRA at all."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)


def kill_in_epoch(patch, config, run_dir, epoch: int = 2) -> None:
    """Train ``config`` into ``run_dir`` and kill it (KeyboardInterrupt) in the middle of stage 1's ``epoch``,
    as Ctrl-C or a scheduler would; ``patch`` is a pytest MonkeyPatch, restored to the real epoch afterwards."""
    import percept.engine.train as train_module
    real, calls = train_module.train_one_epoch, {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == epoch:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    patch.setattr(train_module, "train_one_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(config, run_dir)
    patch.setattr(train_module, "train_one_epoch", real)
