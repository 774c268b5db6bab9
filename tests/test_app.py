"""The demo app: its functions called directly, the running server driven through gradio_client,
and one real-browser check (headless Chromium + chromedriver, skipped where they are absent).

The runs are tiny random-weight models in the layout ``make demo`` writes (no training): the app's numbers are
checked against ``percept predict`` and :mod:`percept.study.interpret` computed independently."""
from __future__ import annotations

import json
import os
import shutil
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio")
pytest.importorskip("gradio_client")

from conftest import randomize_lora  # noqa: E402

from percept.engine.predict import predict_images  # noqa: E402
from percept.engine.runs import PROTOCOL  # noqa: E402
from percept.interface import app as percept_app  # noqa: E402
from percept.interface.app_models import (  # noqa: E402
    attention_rows,
    demo_runs,
    load_models,
    score_images,
)
from percept.model.perceptclip import ModelConfig, build_model, save_weights  # noqa: E402

# Gradio's queue uses pandas options that pandas 3 deprecates: its warnings, not ours
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"),
              pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

TASKS = {"synthetic_iqa": 1, "synthetic_strength": 1, "synthetic_distortion": 4}   # the three demo runs


def _noise(w, h, seed, mode="RGB"):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert(mode)


def _run(root: Path, dataset: str, outputs: int, strategy: str = "lora", seed: int = 0) -> Path:
    """A finished run directory as `make demo` lays it out (random tiny weights, LoRA that matters)."""
    root.mkdir(parents=True)
    torch.manual_seed(seed)
    config = ModelConfig(backbone="tiny_clip_prior", strategy=strategy, heads={dataset: outputs})
    model = build_model(config)
    randomize_lora(model)
    save_weights(model.eval(), root / "best.safetensors")
    (root / "config.json").write_text(json.dumps({"data": [{"dataset": dataset, "root": str(root / "absent")}],
                                                  "model": config.to_dict(), "test_crops": 2, "split": 1,
                                                  "lr": 1e-3, "protocol": PROTOCOL}))
    (root / "metrics.json").write_text(json.dumps({"status": "complete"}))
    return root


@pytest.fixture(scope="module", autouse=True)
def app_env(tmp_path_factory):
    """The example images in a temporary folder; one torch thread: the tiny models are ~50x slower when two
    threads contend with another process for two cores (the same reason as percept.interface.notebooks.setup)."""
    before, examples = torch.get_num_threads(), os.environ.get("PERCEPT_APP_EXAMPLES")
    torch.set_num_threads(1)
    os.environ["PERCEPT_APP_EXAMPLES"] = str(tmp_path_factory.mktemp("app_examples"))
    yield
    torch.set_num_threads(before)
    if examples is None:
        del os.environ["PERCEPT_APP_EXAMPLES"]
    else:
        os.environ["PERCEPT_APP_EXAMPLES"] = examples


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Random-weight stand-ins of the demo runs, or ``$PERCEPT_APP_RUNS`` (e.g. ``outputs/notebooks/runs`` after
    ``make demo``: the same checks on the trained demo runs, and the README's screenshot of them)."""
    if os.environ.get("PERCEPT_APP_RUNS"):
        return Path(os.environ["PERCEPT_APP_RUNS"])
    root = tmp_path_factory.mktemp("app_runs")
    for dataset, outputs in TASKS.items():
        _run(root / "e8-p12" / dataset / "lora_r16_a8_mlp" / "split1" / "lr0.001", dataset, outputs)
    return root


@pytest.fixture(scope="module")
def app_models(runs_dir):
    return load_models(None, runs_dir=runs_dir)          # the offline default: the demo runs


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Good images (RGB, CMYK, alpha, 16-bit grayscale) and files the app must refuse with a message."""
    root = tmp_path_factory.mktemp("app_images")
    _noise(300, 240, 0).save(root / "rgb.jpg", quality=90)
    _noise(280, 250, 2, "CMYK").save(root / "cmyk.jpg")
    _noise(250, 230, 4, "RGBA").save(root / "alpha.png")
    Image.fromarray(np.arange(250 * 250, dtype=np.uint16).reshape(250, 250) * 7).save(root / "deep16.png")
    (root / "notes.png").write_text("not an image")
    Image.new("1", (8000, 6300)).save(root / "huge.png")               # 50.4 MP, a few kB on disk
    return root


GOOD = ["rgb.jpg", "cmyk.jpg", "alpha.png", "deep16.png"]


# ----------------------------------------------------------------------------- the functions
def test_default_is_the_demo_runs_and_a_clear_error_without_them(app_models, runs_dir, tmp_path):
    assert [m.run_dir for m in app_models] == [p for p in demo_runs(runs_dir)]
    assert [m.task for m in app_models] == ["iqa", "memorability", "emotion"]
    with pytest.raises(FileNotFoundError, match=r"`percept notebooks 01 02 03` trains them"):
        load_models(None, runs_dir=tmp_path)
    old = tmp_path / "older" / "run"                       # a demo run of an older percept protocol: never served
    shutil.copytree(app_models[0].run_dir, old)
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "protocol": PROTOCOL - 1}))
    with pytest.raises(FileNotFoundError, match="percept notebooks"):
        demo_runs(tmp_path / "older")


def test_scores_equal_percept_predict(app_models, images):
    files = [images / n for n in GOOD]
    table, details, messages = score_images(app_models, files)
    assert messages == [] and list(table["image"]) == GOOD
    for m in app_models:
        expected = predict_images(files, m.run_dir, device="cpu")
        got = details[m.label]
        assert list(got.columns) == list(expected.columns)
        if m.kind == "regression":
            np.testing.assert_allclose(got["score"], expected["score"], rtol=0, atol=1e-6)
            np.testing.assert_allclose(table[m.label], expected["score"], rtol=0, atol=1e-6)
            assert (expected["crop_std"] > 0).all() == (m.task == "iqa")   # IQA: two test crops averaged
        else:
            probs = expected[[f"prob_{c}" for c in m.class_names]].to_numpy()
            np.testing.assert_allclose(got[[f"prob_{c}" for c in m.class_names]], probs, rtol=0, atol=1e-6)
            np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
            assert list(table[m.label]) == list(expected["prediction"])
            np.testing.assert_allclose(table[f"{m.label} p"], probs.max(1), atol=1e-6)


def test_emotion_bars_show_the_class_probabilities(app_models, images):
    files = [images / "rgb.jpg", images / "alpha.png"]
    _, details, _ = score_images(app_models, files)
    emotion = next(m for m in app_models if m.kind == "classification")
    expected = predict_images([files[1]], emotion.run_dir, device="cpu")
    fig = percept_app.emotion_bars(app_models, details, str(files[1]))
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["gaussian_blur", "gaussian_noise", "jpeg",
                                                            "color_quantization"]
    heights = [p.get_height() for p in ax.patches]
    np.testing.assert_allclose(heights, expected[[f"prob_{c}" for c in emotion.class_names]].iloc[0], atol=1e-6)


def test_attention_maps_of_the_top_heads(app_models, images):
    from percept.core.images import load_rgb
    from percept.data.sources import dataset_transform
    from percept.engine.runs import RunDir
    from percept.study.interpret import cls_attention_maps, head_importance, top_heads
    iqa = app_models[0]
    crop, rows, where = attention_rows(iqa, images / "cmyk.jpg", percept_app.example_images(), k=2)
    model = RunDir(iqa.run_dir).load_model()                      # computed again, independently of the app
    single = dataset_transform("synthetic_iqa", train=False, test_crops=1, normalization=model.normalization)
    if "example images" in where:                                 # the run's test images are not here
        examples = torch.cat([single(load_rgb(p)) for p in percept_app.example_images()])
    else:                                                         # $PERCEPT_APP_RUNS: the demo's data is here
        from percept.interface.notebooks import sample_images
        examples = sample_images(iqa.run_dir, n=8)[0]
        assert where == f"{len(examples)} test images of synthetic_iqa"
    table = head_importance(model, examples)
    x = single(load_rgb(images / "cmyk.jpg"))
    torch.testing.assert_close(crop, x[0])
    grid = tuple(model.vit.patch_embed.grid_size)
    for row, (_, top) in zip(rows, top_heads(table, k=2).iterrows(), strict=True):
        assert (row["layer"], row["head"]) == (top["layer"], top["head"])
        maps = cls_attention_maps(model, x, int(top["layer"]), int(top["head"]))
        for name in ("finetuned", "original", "difference"):
            assert row[name].shape == grid
            np.testing.assert_allclose(row[name], maps[name][0], atol=1e-6)
        np.testing.assert_allclose(row["difference"], row["finetuned"] - row["original"], atol=1e-7)
    # LoRA changes where the model looks. Not necessarily in a top head: a head whose CLS attends to itself before
    # and after fine-tuning has a patch map of ~0 in both, and can still matter most under uniform-CLS ablation
    # (the demo prior's IQA run has one such head).
    depth, heads = len(model.vit.blocks), model.vit.blocks[0].attn.num_heads
    assert max(np.abs(cls_attention_maps(model, x, layer, head)["difference"]).max()
               for layer in range(depth) for head in range(heads)) > 1e-4
    fig, caption = percept_app.attention_figure(iqa, images / "cmyk.jpg", percept_app.example_images(), k=2)
    assert len(fig.axes) >= 8 and where in caption


def test_a_hub_folder_is_served_as_percept_predict_scores_it(app_models, images, tmp_path):
    from percept.study.export import export_run
    emotion = app_models[2]
    hub = export_run(emotion.run_dir, "hub", tmp_path / "hub")
    (served,) = load_models([hub])
    assert (served.task, served.class_names, served.run_dir) == ("emotion", emotion.class_names, None)
    _, details, _ = score_images([served], [images / "rgb.jpg"])
    expected = predict_images([images / "rgb.jpg"], hub, device="cpu")
    columns = [f"prob_{c}" for c in served.class_names]
    np.testing.assert_allclose(details[served.label][columns], expected[columns], atol=1e-6)


def test_a_model_without_lora_says_so(tmp_path, images):
    (frozen,) = load_models([_run(tmp_path / "run", "synthetic_iqa", 1, strategy="frozen")])
    with pytest.raises(ValueError, match="no LoRA adapter"):
        attention_rows(frozen, images / "rgb.jpg", percept_app.example_images())


def test_bad_uploads_become_messages(app_models, images):
    files = [images / n for n in ["notes.png", "huge.png", *GOOD]]
    table, details, messages = score_images(app_models, files)
    assert list(table["image"]) == GOOD                           # CMYK, alpha and 16-bit are scored
    assert len(messages) == 2
    assert messages[0].startswith("huge.png: 8000 x 6300 = 50 MP") and "downscale" in messages[0]
    assert messages[1].startswith("notes.png:") and "upload a JPEG" in messages[1]


def test_cli_and_launch_pass_their_options(monkeypatch, runs_dir, tmp_path, capsys):
    from percept.interface.cli import main
    calls = []
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kw: calls.append(kw))
    run = str(demo_runs(runs_dir)[0])
    assert main(["app", "--model", run, "--port", "7999", "--host", "0.0.0.0"]) in (0, None)
    percept_app.launch([run], inline=True)                       # JupyterLab: inside the output cell
    assert [(c["server_port"], c["server_name"], c["inline"]) for c in calls] == [(7999, "0.0.0.0", False),
                                                                                 (None, None, True)]
    assert all(str(percept_app.example_images()[0].parent.parent) in c["allowed_paths"] for c in calls)
    assert all(c["max_file_size"] == "50mb" for c in calls)             # uploads are size-limited
    assert main(["app", "--runs-dir", str(tmp_path)]) == 2      # no demo runs: say what to do
    assert "percept notebooks" in capsys.readouterr().err


def test_space_entry_point_reads_its_models(monkeypatch, runs_dir):
    import importlib.util

    from conftest import REPO_ROOT
    run = str(demo_runs(runs_dir)[2])
    monkeypatch.setenv("PERCEPT_APP_MODELS", run)
    spec = importlib.util.spec_from_file_location("space_app", REPO_ROOT / "app.py")
    space = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(space)
    assert isinstance(space.demo, gr.Blocks) and space.configured_models() == [run]
    monkeypatch.delenv("PERCEPT_APP_MODELS")
    monkeypatch.setenv("SPACE_ID", "user/space")                  # on a Space: the official checkpoints
    assert space.configured_models() == space.OFFICIAL
    monkeypatch.delenv("SPACE_ID")
    assert space.configured_models() is None                      # offline: the demo runs


# ----------------------------------------------------------------------------- the server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(app_models):
    demo = percept_app.build_app(app_models=app_models)
    port = _free_port()
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True,
                allowed_paths=[str(demo.examples_folder)])
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def _client(url):
    from gradio_client import Client
    return Client(url, verbose=False)


def _score(client, files):
    from gradio_client import handle_file
    return client.predict([handle_file(str(f)) for f in files], api_name="/score")


def test_server_scores_uploads(server, app_models, images):
    table, status, selected = _score(_client(server), [images / "rgb.jpg", images / "deep16.png"])
    frame = pd.DataFrame(table["data"], columns=table["headers"])
    expected = predict_images([images / "rgb.jpg", images / "deep16.png"], app_models[0].run_dir, device="cpu")
    assert list(frame["image"]) == ["rgb.jpg", "deep16.png"] and selected["value"] == "rgb.jpg"
    np.testing.assert_allclose(frame[app_models[0].label].astype(float), expected["score"], atol=1e-4)
    assert status.startswith("Scored 2 of 2")


def test_server_reports_bad_files_and_keeps_serving(server, images):
    client = _client(server)
    table, status, _ = _score(client, [images / "notes.png", images / "huge.png"])
    assert "notes.png" in status and "huge.png" in status and "Scored 0 of 2" in status
    table, status, _ = _score(client, [images / "alpha.png"])
    assert [row[0] for row in table["data"]] == ["alpha.png"]


def test_eight_parallel_clients_all_get_answers(server, images):
    files = [images / GOOD[i % len(GOOD)] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda f: _score(_client(server), [f]), files))
    assert [a[0]["data"][0][0] for a in answers] == [f.name for f in files]


# ----------------------------------------------------------------------------- a real browser
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
    "/usr/bin/chromedriver"


def test_browser_uploads_and_sees_scores(server, app_models, images, tmp_path):
    """Headless Chromium loads the page, uploads an image and waits for the scores; the screenshot is kept
    (``PERCEPT_APP_SCREENSHOT=PATH`` also writes it there: the README's figure)."""
    if not (Path(CHROMIUM).is_file() and Path(DRIVER).is_file()):
        pytest.skip("no headless browser: install Chromium and its driver (Debian: apt-get install chromium "
                    "chromium-driver) to run this check")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser check needs selenium")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    picture = percept_app.example_images()[0]                     # a clean demo image (the README's screenshot)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1700"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=webdriver.ChromeService(executable_path=DRIVER), options=options)
    try:
        browser.get(server)
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, "input[type=file]"))
        browser.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(picture))
        WebDriverWait(browser, 60).until(lambda b: "Scored 1 of 1" in b.find_element(By.TAG_NAME, "body").text)
        WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png']"))
        text = browser.find_element(By.ID, "percept-scores").text
        shot = tmp_path / "app.png"
        browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    expected = predict_images([picture], app_models[0].run_dir, device="cpu")
    assert picture.name in text and f"{expected['score'].iloc[0]:.4f}" in text
    assert Image.open(shot).size[0] > 0
    if os.environ.get("PERCEPT_APP_SCREENSHOT"):                  # 256 colours: a few hundred kB to commit
        Image.open(shot).convert("RGB").quantize(256).save(os.environ["PERCEPT_APP_SCREENSHOT"], optimize=True)
