"""image_grid against layouts and pixel values worked out by hand."""
import numpy as np
import pytest
import torch

from convnet.viz.grid import fit_scale, image_grid, to_pil

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30), (200, 100, 50)]


def solid(colour, h=4, w=6) -> torch.Tensor:
    return torch.tensor(colour, dtype=torch.uint8).view(3, 1, 1).expand(3, h, w).contiguous()


def test_cells_are_placed_row_by_row_with_padding():
    grid = np.asarray(image_grid([solid(c) for c in COLOURS], ncols=3, scale=2, pad=1, background=255))
    # 3 columns of 12-pixel cells with 1-pixel gaps: 1 + 3 * 13 = 40 wide; 2 rows of 8: 1 + 2 * 9 = 19 high.
    assert grid.shape == (19, 40, 3)
    for i, colour in enumerate(COLOURS):
        top, left = 1 + (i // 3) * 9, 1 + (i % 3) * 13
        assert (grid[top : top + 8, left : left + 12] == colour).all()
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all() and (grid[:, 13] == 255).all()
    assert (grid[10:18, 27:39] == 255).all()  # the sixth cell is empty


def test_upscaling_is_nearest_neighbour():
    img = np.arange(12, dtype=np.uint8).reshape(3, 2, 2) * 20
    out = np.asarray(image_grid([img], scale=3, pad=0))
    expected = img.repeat(3, axis=1).repeat(3, axis=2).transpose(1, 2, 0)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(np.asarray(to_pil(img, 3)), expected)


def test_grey_images_and_batches_and_lists_agree():
    grey = torch.randint(0, 256, (2, 5, 5), dtype=torch.uint8)
    from_hw = np.asarray(image_grid([g for g in grey]))
    from_batch = np.asarray(image_grid(grey[:, None]))
    from_numpy = np.asarray(image_grid(grey[:, None].numpy()))
    np.testing.assert_array_equal(from_hw, from_batch)
    np.testing.assert_array_equal(from_hw, from_numpy)
    np.testing.assert_array_equal(from_hw[2:7, 2:7], np.repeat(grey[0].numpy()[:, :, None], 3, axis=2))


def test_default_columns_make_a_near_square_grid():
    grid = image_grid([solid(COLOURS[0], 3, 3)] * 10, pad=0)
    assert grid.size == (4 * 3, 3 * 3)  # ceil(sqrt(10)) = 4 columns, 3 rows


def test_smaller_images_are_centred_in_their_cell():
    grid = np.asarray(image_grid([solid(COLOURS[0], 6, 6), solid(COLOURS[1], 2, 2)], pad=0, background=0))
    assert grid.shape == (6, 12, 3)
    assert (grid[2:4, 8:10] == COLOURS[1]).all()
    assert (grid[0:2, 6:12] == 0).all() and (grid[:, 6:8] == 0).all()


def test_captions_add_a_text_row_and_widen_narrow_cells():
    plain = image_grid([solid(c, 8, 8) for c in COLOURS[:2]], pad=2)
    captioned = image_grid([solid(c, 8, 8) for c in COLOURS[:2]], captions=["a much longer caption", "b"], pad=2)
    assert captioned.height > plain.height and captioned.width > plain.width
    text_row = np.asarray(captioned)[2 + 8 + 2 :]
    assert (text_row < 128).any(), "no caption text was drawn"


@pytest.mark.parametrize(
    "images, captions, error",
    [
        ([], None, ValueError),
        ([solid(COLOURS[0])], ["a", "b"], ValueError),
        ([torch.zeros(3, 4, 4)], None, TypeError),
        ([torch.zeros(2, 4, 4, dtype=torch.uint8)], None, TypeError),
    ],
)
def test_bad_input_is_refused(images, captions, error):
    with pytest.raises(error):
        image_grid(images, captions=captions)


@pytest.mark.parametrize("size, target, expected", [((30, 30), 64, 2), ((4, 4), 64, 16), ((3, 5), 48, 10),
                                                     ((300, 200), 64, 1)])
def test_fit_scale(size, target, expected):
    assert fit_scale(size, target) == expected


def test_a_title_goes_above_the_cells_and_shifts_them_down():
    plain = np.asarray(image_grid([solid(c, 8, 8) for c in COLOURS[:2]], pad=2))
    titled = np.asarray(image_grid([solid(c, 8, 8) for c in COLOURS[:2]], pad=2,
                                   title="a title wider than the two cells"))
    shift = titled.shape[0] - plain.shape[0]
    assert shift > 0 and titled.shape[1] > plain.shape[1]
    assert (titled[:shift] < 128).any(), "no title text was drawn"
    left = (titled.shape[1] - plain.shape[1]) // 2  # the cells are centred under the title
    np.testing.assert_array_equal(titled[shift:, left : left + plain.shape[1]], plain)


def test_save_image_grid_writes_the_upscaled_images_in_order_as_a_png(tmp_path):
    from PIL import Image

    from convnet.viz.grid import save_image_grid

    images = torch.stack([solid(c, 32, 32) for c in COLOURS])
    path = save_image_grid(images, [f"class {i}" for i in range(5)], tmp_path / "sub" / "grid.png", ncols=3,
                           title="first images")
    png = np.asarray(Image.open(path).convert("RGB"))
    centres = []
    for colour in COLOURS:
        ys, xs = np.nonzero((png == colour).all(axis=2))
        assert len(ys) == 96 * 96, f"{colour} is not one 96x96 square (32 pixels upscaled 3x)"
        assert ys.max() - ys.min() == 95 and xs.max() - xs.min() == 95
        centres.append((ys.mean(), xs.mean()))
    (r0, c0), (r1, c1), (r2, c2), (r3, c3), _ = centres
    assert r0 == r1 == r2 < r3 and c0 < c1 < c2 and c3 == c0  # row by row, three to a row


def test_multi_line_captions_fit_their_caption_row():
    one_line = image_grid([solid(COLOURS[0], 8, 8)] * 2, captions=["a", "b"], ncols=1, pad=2)
    grid = np.asarray(image_grid([solid(COLOURS[0], 8, 8)] * 2, captions=["a\nsecond", "b\nsecond"], ncols=1, pad=2))
    assert grid.shape[0] > one_line.height
    image_rows = np.flatnonzero((grid == COLOURS[0]).all(axis=2).any(axis=1))
    text_rows = np.flatnonzero((grid < 128).all(axis=2).any(axis=1))  # black text; the red squares have R = 255
    first, second = image_rows[:8], image_rows[8:]
    assert len(image_rows) == 16 and (np.diff(first) == 1).all() and (np.diff(second) == 1).all()
    under_first = text_rows[(text_rows > first[-1]) & (text_rows < second[0])]
    under_second = text_rows[text_rows > second[-1]]
    assert len(under_first) + len(under_second) == len(text_rows), "text was drawn over an image"
    one_line_rows = np.flatnonzero((np.asarray(one_line) < 128).all(axis=2).any(axis=1))
    one_line_span = np.ptp(one_line_rows[one_line_rows < one_line.height // 2])
    for rows in (under_first, under_second):
        assert len(rows) and np.ptp(rows) > one_line_span + 6, "the second caption line is missing from its row"
