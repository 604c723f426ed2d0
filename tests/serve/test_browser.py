"""The served pages in a real browser: a real `convnet serve` process (conftest's `served`: the tutorial
CNN trained on a folder of red, green and blue pictures), Debian's chromium driven by Playwright.

What the page shows is checked against the JSON API asked directly (httpx), for the same files and
settings: the page must show the server's answers, not numbers of its own. The model card's words
are checked against sentences written out here by hand. (The README's screenshots of these pages,
with a CIFAR-10 model and a photo, are docs/make_serve_figures.py's job, not the tests'.)

Playwright never downloads a browser here: it is pointed at `which chromium`, and the test is
skipped when that is missing (`apt-get install chromium`; `.ci/run` installs it).
"""
from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("playwright")
httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from PIL import Image  # noqa: E402
from playwright.sync_api import Browser, Page, sync_playwright  # noqa: E402

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install chromium); Playwright must not download its own")

# What this network needs: no sandbox in containers, no GPU, and no calls home.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 20_000  # longest wait for the page to show an answer


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    """Two pictures as PNG files, 48x48 (the model resizes them to its 24x24), and a text file named .png."""
    rng = np.random.default_rng(1)
    out = {}
    for name, channel in (("red", 0), ("blue", 2)):
        pixels = rng.integers(0, 100, (48, 48, 3), dtype=np.uint8)
        pixels[12:36, 8:40, channel] = 230  # a bright block of the class's colour
        out[name] = tmp_path / f"{name}.png"
        Image.fromarray(pixels).save(out[name])
    out["text"] = tmp_path / "notes.png"
    out["text"].write_text("These are my notes, not a picture.\n")
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"the page's scripts failed: {errors}"


def _post(url: str, path: Path, **fields) -> httpx.Response:
    return httpx.post(url, files={"file": (path.name, path.read_bytes(), "image/png")}, data=fields, timeout=30)


def _png(src: str) -> Image.Image:
    """The image behind a data: URL, which must be a whole, valid PNG."""
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    img = Image.open(io.BytesIO(base64.b64decode(src[len(prefix):])))
    assert img.format == "PNG"
    img.load()
    return img


def _grid(page: Page, testid: str) -> list[list[float]]:
    """The numbers of one grid (HTML table) of /explain, row by row."""
    return page.eval_on_selector(
        f"[data-testid={testid}] table tbody",
        "b => [...b.rows].map(r => [...r.querySelectorAll('td')].map(td => Number(td.dataset.value)))",
    )


def _fixed(x: float, places: int) -> str:
    """x to `places` decimals with ties rounded up, as JavaScript's toFixed and Math.round do (Python's
    format rounds ties to even: 6.25 -> "6.2" where the page shows "6.3")."""
    return str(Decimal(x).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _rows(page: Page, selector: str, label: str) -> dict[str, str]:
    """{label's text: the next element's text} for every `label` under `selector` (a <dl>'s dt, a table's th)."""
    return page.eval_on_selector(
        selector,
        f"e => Object.fromEntries([...e.querySelectorAll('{label}')]"
        ".map(l => [l.textContent, l.nextElementSibling.textContent]))",
    )


def test_the_model_card_reads_in_words(served: str, page: Page) -> None:
    card = httpx.get(served + "api/model").json()
    # The colours model is trained with the tutorial's unit normalization: pixels / 255, nothing else.
    assert card["mean"] == [0, 0, 0] and card["std"] == [1, 1, 1]
    metrics = card["metrics"]

    page.goto(served)
    page.wait_for_selector("#model-card [data-testid=metrics]")
    facts = _rows(page, "#model-card dl", "dt")
    assert facts["Normalization"] == "pixels scaled to 0..1"
    assert facts["Input"] == f"3 × {card['input_size'][0]} × {card['input_size'][1]} (channels × height × width)"
    assert facts["Parameters"] == f"{card['total_params']:,}"

    shown = _rows(page, "#model-card [data-testid=metrics]", "th")
    assert shown["Epochs trained"] == str(metrics["epoch"])
    assert shown["Training loss"] == _fixed(metrics["train_loss"], 3)
    assert shown["Validation accuracy"] == _fixed(100 * metrics["val_acc"], 1) + "%"
    assert shown["Training accuracy"] == _fixed(100 * metrics["train_acc"], 1) + "%"
    assert shown["Training speed"] == f"{int(_fixed(metrics['images_per_s'], 0)):,} images per second"
    assert shown["Time of the last epoch"].endswith(" s")
    assert float(shown["Learning rate at the last step"]) == pytest.approx(metrics["lr"], rel=1e-3)
    assert len(shown) == len(metrics)  # every metric, each under a label: no raw key like images_per_s
    assert not [label for label in shown if "_" in label]

    # What a standard-normalized (CIFAR-10 statistics) model and a longer run would show, from the
    # page's own module in the real browser.
    words = page.evaluate("""async () => {
        const f = await import("/static/format.js");
        return [f.normalization([0.4914, 0.48216, 0.44653], [0.24703, 0.24349, 0.26159]),
                f.duration(92.4), f.duration(0.529), f.metricValue("images_per_s", 3400.6),
                f.metricLabel("val_acc_tta"), f.metricLabel("test_top5_acc"), f.metricValue("test_top5_acc", 0.25)];
    }""")
    assert words == [
        "pixels scaled to 0..1, then per channel minus mean 0.491, 0.482, 0.447 and divided by std 0.247, 0.243, 0.262",
        "1 min 32 s", "0.53 s", "3,401 images per second",
        "Validation accuracy with test-time augmentation", "Test top5 acc", "25.0%",
    ]


def test_classify_page(served: str, files: dict[str, Path], page: Page) -> None:
    model = httpx.get(served + "api/models").json()[0]
    height, width = model["input_size"]

    page.goto(served)
    page.wait_for_selector("#model-card [data-testid=summary]")
    assert page.locator("#model-select").input_value() == model["name"]
    assert page.locator("#model-card [data-testid=classes] li").all_text_contents() == model["classes"]

    # Two pictures at once: a strip of thumbnails, the first one shown.
    page.set_input_files("#file-input", [files["red"], files["blue"]])
    page.wait_for_selector("#features [data-layer]")
    assert page.locator("#thumbs button").count() == 2

    expected = _post(served + "predict", files["red"], top_k="5").json()[0]["predictions"]
    assert page.text_content("#top-class") == expected[0]["class"]
    bars = page.locator("#bars [data-class]")
    assert [bars.nth(i).get_attribute("data-class") for i in range(bars.count())] == [p["class"] for p in expected]

    # The image as the network sees it: the model's input size, enlarged without smoothing.
    page.wait_for_selector("#cam-image[src^='data:image/png']")
    seen = _png(page.get_attribute("#input-image", "src"))
    assert seen.width % width == 0 and seen.height % height == 0 and seen.width // width == seen.height // height
    assert page.eval_on_selector("#input-image", "e => getComputedStyle(e).imageRendering") == "pixelated"
    overlay_src = page.get_attribute("#cam-image", "src")
    overlay = _png(overlay_src)
    assert overlay.width % width == 0 and overlay.height % height == 0

    # One figure per conv layer, named and shaped as /features says, each a real PNG.
    features = _post(served + "features", files["red"], format="json").json()["layers"]
    figures = page.locator("#features [data-layer]")
    assert [figures.nth(i).get_attribute("data-layer") for i in range(figures.count())] == [f["name"] for f in features]
    first = features[0]
    assert page.text_content(f"#features [data-layer='{first['name']}'] figcaption") == (
        f"{first['name']}: {first['channels']} × {first['height']} × {first['width']}")
    _png(page.get_attribute(f"#features [data-layer='{first['name']}'] img", "src"))

    # Clicking another class asks for its Grad-CAM: the overlay changes to the server's answer for that class.
    other = expected[1]["class"]
    page.click(f"#bars [data-class='{other}']")
    page.wait_for_selector(f"#cam-image[data-class='{other}']")
    assert page.get_attribute(f"#bars [data-class='{other}']", "aria-pressed") == "true"
    new_src = page.get_attribute("#cam-image", "src")
    assert new_src != overlay_src
    answer = _post(served + "cam", files["red"], class_name=other, format="json").json()
    assert new_src == "data:image/png;base64," + answer["overlay_png"]

    # A text file named .png: the server's sentence, on the page.
    page.set_input_files("#file-input", files["text"])
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    refusal = _post(served + "predict", files["text"])
    sentence = refusal.json()["detail"] if refusal.status_code >= 400 else refusal.json()[0]["error"]
    shown = page.text_content("#error")
    assert sentence in shown and files["text"].name in shown and "Traceback" not in shown
    assert page.locator("#results").is_hidden()

    # Back to a picture, on a phone: nothing wider than the screen.
    page.click("#thumbs li:nth-child(2) button")
    page.wait_for_selector("#features [data-layer]")
    assert page.text_content("#error") == ""
    page.set_viewport_size(PHONE)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_explain_page(served: str, page: Page) -> None:
    page.goto(served + "explain")
    page.wait_for_selector("[data-testid=grid-conv] td")

    def settings() -> dict[str, str]:
        return {name: page.input_value(f"#settings [name={name}]")
                for name in ("kernel", "stride", "padding", "pool", "pool_stride", "seed")}

    before = httpx.get(served + "api/explain", params=settings()).json()
    assert _grid(page, "grid-conv") == before["conv"][0]
    assert _grid(page, "grid-relu") == before["relu"][0]
    assert _grid(page, "grid-max-pool") == before["max_pool"][0]
    assert _grid(page, "grid-avg-pool") == before["avg_pool"][0]

    # Stride 2: the 4x4 image and 2x2 filter give (4 - 2 + 0) / 2 + 1 = 2, a 2x2 map of other numbers.
    page.fill("#stride", "2")
    after = httpx.get(served + "api/explain", params=settings()).json()
    side = after["output_size"]["conv"]["out"]
    assert side != len(before["conv"][0])
    page.wait_for_function(f"document.querySelectorAll('[data-testid=grid-conv] tbody tr').length === {side}")
    assert _grid(page, "grid-conv") == after["conv"][0]
    assert f"/ 2 + 1 = {side}" in page.text_content("#conv-formula")
    assert _grid(page, "grid-softmax") == [list(pair)
                                           for pair in zip(after["logits"], after["probabilities"], strict=True)]

    # A setting the engine refuses: its sentence on the page.
    page.fill("#kernel", "4")
    refusal = httpx.get(served + "api/explain", params=settings())
    assert 400 <= refusal.status_code < 500
    page.wait_for_function("document.querySelector('#error').textContent.length > 0")
    assert page.text_content("#error") == refusal.json()["detail"]

    page.set_viewport_size(PHONE)
    page.fill("#kernel", "2")
    page.wait_for_function("document.querySelector('#error').textContent === ''")
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
