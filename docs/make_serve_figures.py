"""Take the README's screenshots of `convnet serve`'s pages: docs/figures/serve_page.png and serve_explain.png.

    .venv/bin/python docs/make_serve_figures.py MODEL PHOTO

Starts `convnet serve MODEL` on a free loopback port (the tests' own `serve`, tests/serve/conftest.py),
opens the page in Debian's chromium with Playwright (as tests/serve/test_browser.py does; nothing is
downloaded), uploads PHOTO, waits for the prediction, the Grad-CAM and the feature maps, and saves
the whole page; then the same for /explain at its default settings. Prints the top classes it showed.

The committed figures were made with:
- MODEL: the `fast` recipe's network (airnet, 1.97 M parameters) trained 3 epochs on the real
  CIFAR-10 image folder, 45,000 images with 5,000 held out: validation accuracy 0.871 (0.882 with
  TTA), 12 minutes on 2 CPU cores shared with other work. Its run folder stays beside the model
  file, so the page shows its metrics and curves:
      .venv/bin/convnet train --data /work/shared/data/cifar10-jpeg/train --val-split 0.1 \\
          --recipe fast --epochs 3 --name serve-figure-fast
- PHOTO: scikit-image's `skimage.data.chelsea()` (the cat Chelsea, 451x300), saved as a JPEG from a
  throwaway virtual environment (scikit-image is no dependency of convnet):
      python -m venv /tmp/skimg && /tmp/skimg/bin/pip install scikit-image
      /tmp/skimg/bin/python -c "import skimage; skimage.io.imsave('/tmp/chelsea.jpg', skimage.data.chelsea())"
  The page showed cat 70.6%, dog 17.1%. (The tutorial CNN trained 3 epochs with `tutorial-fast`,
  0.704 on validation, called the same photo a deer; scikit-image's other photos are no CIFAR-10 class.)
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' helpers, so the figures are taken the way the tests drive the page

from playwright.sync_api import sync_playwright  # noqa: E402

from tests.serve.conftest import serve  # noqa: E402
from tests.serve.test_browser import CHROMIUM_ARGS, DESKTOP, TIMEOUT_MS  # noqa: E402

FIGURES = ROOT / "docs" / "figures"


def take(model: Path, photo: Path, out: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("Debian's chromium is not installed; install it with apt-get install chromium.")
    out.mkdir(parents=True, exist_ok=True)
    with (tempfile.TemporaryDirectory() as log_dir, serve(model, log_dir=Path(log_dir)) as server,
          sync_playwright() as p):
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=DESKTOP)
        page.set_default_timeout(TIMEOUT_MS)

        page.goto(server.url)
        page.wait_for_selector("#model-card [data-testid=summary]")
        page.set_input_files("#file-input", photo)
        page.wait_for_selector("#features [data-layer]")
        page.wait_for_selector("#cam-image[src^='data:image/png']")
        # The curves are an <img> the browser fetches on its own: wait until it is drawn.
        page.wait_for_function("[...document.images].every((i) => i.complete)")
        bars = page.locator("#bars [data-class]")
        shown = [f"{bars.nth(i).get_attribute('data-class')} {bars.nth(i).locator('.pct').text_content()}"
                 for i in range(bars.count())]
        print(f"{photo.name}: {', '.join(shown)}")
        page.screenshot(path=str(out / "serve_page.png"), full_page=True)

        page.goto(server.url + "explain")
        page.wait_for_selector("[data-testid=grid-conv] td")
        page.screenshot(path=str(out / "serve_explain.png"), full_page=True)
        browser.close()
    print(f"wrote {out / 'serve_page.png'} and {out / 'serve_explain.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="a model file, e.g. runs/<name>/model.safetensors")
    parser.add_argument("photo", type=Path, help="the image to upload, e.g. a JPEG photo of a cat")
    parser.add_argument("--out", type=Path, default=FIGURES, help="where the PNGs go (default: docs/figures)")
    args = parser.parse_args()
    take(args.model, args.photo, args.out)


if __name__ == "__main__":
    main()
