"""Hugging Face Space entry point of the PerceptCLIP demo app (:mod:`percept.interface.app`): ``python app.py``.

Which models: ``$PERCEPT_APP_MODELS`` (comma-separated run directories, hub folders, ``official-*`` names or
``.pth`` files). Unset, the choice follows the machine:

* with the network (a Space: ``SPACE_ID`` is set there) — the three official checkpoints (``official-iqa``,
  ``official-memorability``, ``official-emotions``), fetched from the Hugging Face hub on first start: the paper's
  models, which is what a public demo should show;
* offline (anywhere else) — the embedded demo runs ``make demo`` trains (no network; a clear message if they are
  missing), as ``percept app`` with no ``--model``.

``$PORT`` / ``$GRADIO_SERVER_PORT`` and ``$GRADIO_SERVER_NAME`` are read by Gradio itself; a Space sets them.
The Space's ``requirements.txt`` needs ``percept[app]`` (this repository) and nothing else.
"""
import os

from percept.interface.app import build_app

OFFICIAL = ["official-iqa", "official-memorability", "official-emotions"]


def configured_models() -> list[str] | None:
    """``$PERCEPT_APP_MODELS``, else the official checkpoints on a Space, else None (the demo runs)."""
    listed = [m.strip() for m in os.environ.get("PERCEPT_APP_MODELS", "").split(",") if m.strip()]
    if listed:
        return listed
    return OFFICIAL if os.environ.get("SPACE_ID") else None


demo = build_app(configured_models())

if __name__ == "__main__":
    demo.launch(allowed_paths=[str(demo.examples_folder)])
