"""Configuration fields renamed since run directories were first written, so that old ``config.json``
files still load (read by :meth:`percept.model.ModelConfig.from_dict` and :meth:`percept.runs.RunDir.read_config`).

``head`` became ``head_type`` (``mlp`` / ``linear``, Table 7) so that it is not confused with ``head_name``,
which head of a multi-dataset model a prediction comes from (§3.2).
"""
from __future__ import annotations

RENAMED_MODEL_FIELDS = {"head": "head_type"}


def upgrade_model_fields(model: dict) -> dict:
    """A copy of the model section ``model`` with renamed fields under their current names."""
    out = dict(model)
    for old, new in RENAMED_MODEL_FIELDS.items():
        if old in out:
            if new in out:
                raise ValueError(f"model configuration has both {old!r} (old name) and {new!r}; keep {new!r}")
            out[new] = out.pop(old)
    return out


def upgrade_run_config(config: dict) -> dict:
    """A run's ``config.json`` contents with its model section upgraded (:func:`upgrade_model_fields`)."""
    if isinstance(config.get("model"), dict):
        return {**config, "model": upgrade_model_fields(config["model"])}
    return config
