"""Tile images into one picture, with optional captions: the layout every viz figure shares.

The labelled figures the CLI writes (feature maps, Grad-CAM) are matplotlib Figures made with
the object API, never pyplot (see viz.plots): they share `show_image` for the input beside the
maps and `save_figure`.

Images are uint8 in channels-first layout, as the data pipeline makes them: a (N, C, H, W)
tensor or array, or a list of (C, H, W) / (H, W) ones, C being 1 (grey) or 3 (RGB). Small
images are upscaled by an integer factor with nearest-neighbour sampling, so every pixel the
network saw stays a visible square instead of being smoothed away.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from convnet.files import atomic_write

ImageLike = torch.Tensor | np.ndarray
SAMPLE_PIXELS = 96  # sample grids upscale small images to about this many pixels a side
FIGURE_DPI = 100  # pixels per inch of a saved Figure: a 10 x 5 inch figure is 1000 x 500 pixels


def fit_scale(size: tuple[int, int], target: int) -> int:
    """The integer upscaling factor that brings the longer side of an (H, W) image near `target` pixels (at least 1)."""
    return max(1, round(target / max(size)))


def to_hwc(image: ImageLike) -> np.ndarray:
    """A uint8 (C, H, W) or (H, W) tensor/array -> uint8 (H, W, 3) array."""
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3):
        raise TypeError(f"an image must be (C, H, W) with C 1 or 3, or (H, W); got shape {arr.shape}")
    return np.ascontiguousarray(np.broadcast_to(arr, (3, *arr.shape[1:])).transpose(1, 2, 0))


def to_pil(image: ImageLike, scale: int = 1) -> Image.Image:
    """A uint8 (C, H, W) or (H, W) image -> RGB Pillow image, upscaled `scale` times with nearest neighbour."""
    img = Image.fromarray(to_hwc(image), mode="RGB")
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST) if scale != 1 else img


def image_grid(
    images: ImageLike | Sequence[ImageLike],
    captions: Sequence[str] | None = None,
    ncols: int | None = None,
    scale: int = 1,
    pad: int = 2,
    background: int = 255,
    title: str | None = None,
    font_size: int | None = None,
) -> Image.Image:
    """Tile images row by row into one RGB picture.

    Args:
        images: uint8 (N, C, H, W), or a list of (C, H, W) / (H, W) images; sizes may differ
            (each is centred in a cell as large as the largest).
        captions: text under each image ("\n" starts a new line), or None for no caption row.
        ncols: images per row; default ceil(sqrt(N)), a near-square grid.
        scale: integer nearest-neighbour upscaling applied to every image.
        pad: pixels of background around and between cells.
        background: grey level (0..255) of the padding.
        title: text centred above the grid, or None.
        font_size: pixel size of captions and title; None: Pillow's default font.
    Returns:
        An RGB image: the title row, if any, above ceil(N / ncols) rows and min(N, ncols)
        columns of cells.
    """
    tiles = [to_pil(im, scale) for im in images]
    if not tiles:
        raise ValueError("image_grid needs at least one image")
    if captions is not None and len(captions) != len(tiles):
        raise ValueError(f"got {len(captions)} captions for {len(tiles)} images")
    ncols = min(ncols or math.ceil(math.sqrt(len(tiles))), len(tiles))
    nrows = math.ceil(len(tiles) / ncols)

    font = ImageFont.load_default(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def size(text: str) -> tuple[int, int]:
        """(width, height) of `text` in whole pixels, its lines centred under each other."""
        box = measure.multiline_textbbox((0, 0), text, font=font, align="center")
        return math.ceil(box[2]), math.ceil(box[3])

    sizes = [size(text) for text in captions or ()]
    # Cells are wide enough for the widest caption; the caption row is as tall as the tallest text.
    caption_h = max((h for _, h in sizes), default=0) + (pad if sizes else 0)
    cell_w = max([t.width for t in tiles] + [w for w, _ in sizes])
    cell_h = max(t.height for t in tiles)
    cells_w = pad + ncols * (cell_w + pad)
    title_w, title_h = size(title) if title else (0, 0)
    title_h += pad if title else 0
    width = max(cells_w, title_w + 2 * pad)
    left = (width - cells_w) // 2  # the cells, centred under a wider title

    grid = Image.new("RGB", (width, title_h + pad + nrows * (cell_h + caption_h + pad)), (background,) * 3)
    draw = ImageDraw.Draw(grid)
    text_colour = (0,) * 3 if background >= 128 else (255,) * 3
    if title:
        draw.multiline_text(((width - title_w) // 2, pad), title, fill=text_colour, font=font, align="center")
    for i, tile in enumerate(tiles):
        x = left + pad + (i % ncols) * (cell_w + pad)
        y = title_h + pad + (i // ncols) * (cell_h + caption_h + pad)
        grid.paste(tile, (x + (cell_w - tile.width) // 2, y + (cell_h - tile.height) // 2))
        if captions is not None:
            draw.multiline_text((x + (cell_w - sizes[i][0]) // 2, y + cell_h + pad), captions[i], fill=text_colour,
                                font=font, align="center")
    return grid


def png_bytes(image: Image.Image) -> bytes:
    """`image` encoded as PNG, for an answer that needs no file."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def save_png(image: Image.Image, path: str | Path) -> Path:
    """Write `image` as a PNG through a temporary file and a rename (folders made as needed)."""
    path = Path(path)
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
    return path


def save_image_grid(images: torch.Tensor, captions: Sequence[str], path: str | Path, ncols: int = 5,
                    title: str | None = None) -> Path:
    """Images (N, C, H, W) uint8 in a grid, each with its caption below, as the tutorial shows the data;
    a PNG at `path`."""
    scale = fit_scale(tuple(images.shape[2:]), SAMPLE_PIXELS)
    return save_png(image_grid(images, captions, ncols=ncols, scale=scale, pad=6, title=title, font_size=14), path)


def show_image(ax: Axes, image: ImageLike, title: str) -> None:
    """Draw a uint8 (C, H, W) or (H, W) image on `ax` with square pixels (nearest neighbour), no ticks."""
    ax.imshow(to_hwc(image), interpolation="nearest")
    ax.set_title(title, fontsize=10)
    ax.set_axis_off()


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG of FIGURE_DPI through a temporary file and a rename (folders made as needed).

    The whole figure is saved, not a tight crop, so an axes' place in the PNG is its place in the
    figure (tests probe pixels there)."""
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=FIGURE_DPI))
    return path
