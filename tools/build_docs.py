"""Build the study's site offline: ``make docs`` (``python tools/build_docs.py``).

The site (``mkdocs.yml``: mkdocs-material, mkdocs-jupyter, mkdocstrings) holds the numbered notebooks as
``make demo`` executed them (``outputs/notebooks/NN_*.ipynb``, with their figures), the pages of ``docs/``
(deviations, the demo prior's design and log, running at scale, performance, layout) and the API reference
from the package's docstrings. ``docs/`` and the executed notebooks are staged together in one folder, mkdocs
builds from it, and every notebook page is checked to hold every figure its notebook displayed. With Chromium
on the machine, ``--screenshot PNG`` also photographs the IQA page (headless), the README's picture.

Nothing is fetched: no theme, font or script comes from the network, and the site opens from ``file://`` (its
search needs the site served, see ``mkdocs.yml``).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "mkdocs.yml"
DOCS = REPO / "docs"
NOTEBOOKS = REPO / "notebooks"
SCREENSHOT_PAGE = "notebooks/01_iqa.html"       # the IQA notebook: the page of the README's screenshot
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class DocsError(RuntimeError):
    """A user-facing problem: one line naming the file and what to do."""


def notebook_names() -> list[str]:
    """The numbered notebooks of the repository, in order (the site's study pages)."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def stage(executed_dir: Path, staging: Path) -> Path:
    """``docs/`` plus the executed notebooks in ``staging/notebooks/``; an unexecuted or missing one is named."""
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(DOCS, staging)
    (staging / "notebooks").mkdir(exist_ok=True)
    for name in notebook_names():
        source = executed_dir / f"{name}.ipynb"
        if not source.is_file():
            raise DocsError(f"{source}: no executed notebook; run `make demo` first (it writes them there)")
        if not _executed(source):
            raise DocsError(f"{source}: not executed (no outputs); run `make demo` again")
        shutil.copyfile(source, staging / "notebooks" / source.name)
    return staging


def _cells(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["cells"]
    except (ValueError, KeyError) as err:
        raise DocsError(f"{path}: not a notebook ({err}); run `make demo` again") from None


def _executed(path: Path) -> bool:
    return any(c.get("outputs") for c in _cells(path) if c["cell_type"] == "code")


def _displayed_images(path: Path) -> int:
    """How many figures (PNG outputs) a notebook displayed."""
    return sum("image/png" in out.get("data", {}) for cell in _cells(path) if cell["cell_type"] == "code"
               for out in cell.get("outputs", []))


def build(staging: Path, site: Path) -> Path:
    """mkdocs build of ``mkdocs.yml`` with ``staging`` as its docs folder, into ``site``."""
    try:   # the docs extra: a missing package is one line, not a traceback
        from mkdocs.commands.build import build as mkdocs_build
        from mkdocs.config import load_config
        from mkdocs.exceptions import MkDocsException
    except ImportError as err:
        raise DocsError(f"{err.name} is not installed: pip install -e '.[docs]' (make docs installs it)") from None

    try:
        config = load_config(str(CONFIG), docs_dir=str(staging), site_dir=str(site))
        mkdocs_build(config)
    except MkDocsException as err:
        raise DocsError(f"{CONFIG}: mkdocs could not build the site: {err}") from None
    return site


def check_site(site: Path, staging: Path) -> list[str]:
    """Problems of the built site: a notebook page missing, or holding fewer figures than its notebook."""
    problems = []
    for name in notebook_names():
        page = site / "notebooks" / f"{name}.html"
        if not page.is_file():
            problems.append(f"{page}: no page for notebook {name}")
            continue
        shown = len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", page.read_text(encoding="utf-8")))
        expected = _displayed_images(staging / "notebooks" / f"{name}.ipynb")
        if shown < expected or expected == 0:
            problems.append(f"{page}: {shown} figures on the page, {expected} in the executed notebook")
    for page in ("deviations.html", "prior.html", "scale.html", "api.html", "index.html"):
        if not (site / page).is_file():
            problems.append(f"{site / page}: missing")
    for source in sorted(staging.glob("*.md")):
        fences = sum(line.lstrip().startswith("```") for line in source.read_text(encoding="utf-8").splitlines())
        if fences % 2:
            problems.append(f"{source.name}: a code block is not closed ({fences} ``` lines)")
    for page in sorted(site.rglob("*.html")):
        fetched = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"(https?://[^\"]+)\"[^>]*>", page.read_text(encoding="utf-8"))
        fetched = [url for url in fetched if not url.startswith("https://squidfunk.github.io")]   # the footer's link
        if fetched:
            problems.append(f"{page}: loads {fetched[0]} from the network")
    return problems


def chromium() -> str | None:
    """A headless-capable Chromium on this machine, or None."""
    return next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1800) -> Path:
    """A headless-Chromium picture of ``page`` (a file of the built site) into ``png``."""
    browser = chromium()
    if browser is None:
        raise DocsError("no Chromium on this machine (apt-get install chromium); the screenshot is skipped")
    png.parent.mkdir(parents=True, exist_ok=True)
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise DocsError(f"{browser}: the screenshot of {page} took over 120 s; try again") from None
    if done.returncode != 0 or not png.is_file() or png.stat().st_size == 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DocsError(f"{browser}: the screenshot of {page} failed: {last}")
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebooks", type=Path, default=REPO / "outputs" / "notebooks",
                        help="the executed notebooks (make demo's output folder)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "site", help="the site's folder")
    parser.add_argument("--screenshot", type=Path, default=None,
                        help=f"also photograph {SCREENSHOT_PAGE} into this PNG (headless Chromium; skipped without)")
    args = parser.parse_args(argv)
    try:
        staging = stage(args.notebooks, args.out.with_name(args.out.name + "_src"))
        site = build(staging, args.out)
        problems = check_site(site, staging)
        if problems:
            raise DocsError("; ".join(problems))
        print(f"site: {site / 'index.html'} ({len(notebook_names())} notebook pages, every figure present)")
        if args.screenshot:
            try:
                print(f"screenshot: {screenshot(site / SCREENSHOT_PAGE, args.screenshot)}")
            except DocsError as err:
                print(f"screenshot skipped: {err}")
    except DocsError as err:
        print(f"make docs: {err}", file=sys.stderr)
        return 1
    except OSError as err:   # a full disk, a folder that cannot be written
        print(f"make docs: {err.filename or args.out}: {err.strerror or err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make docs: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
