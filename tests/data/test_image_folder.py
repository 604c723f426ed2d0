"""Image folders in every format and mode Pillow writes, checked against hand-computed pixels."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convnet.data import image_folder
from convnet.data.image_folder import DataWarning, folder_splits, load_image_folder
from convnet.errors import DataError


def solid(path, color, size=(8, 8), mode="RGB", **save_args):
    """Write a one-colour image of `size` (W, H) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, **save_args)
    return path


def test_flat_folder_labels_follow_sorted_class_names(tmp_path):
    solid(tmp_path / "zebra" / "1.png", (0, 0, 255))
    solid(tmp_path / "ant" / "1.png", (255, 0, 0))
    solid(tmp_path / "ant" / "2.png", (0, 255, 0))
    ds = load_image_folder(tmp_path)
    assert ds.classes == ("ant", "zebra")
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.images.shape == (3, 3, 8, 8)
    assert ds.images[:, :, 4, 4].tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert folder_splits(tmp_path) == ("all",)


def test_formats_and_modes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    solid(a / "01_rgb.jpg", (200, 100, 50), quality=100)
    solid(a / "02_gray.png", 100, mode="L")
    rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 255))
    rgba.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent: shown on white
    rgba.save(a / "03_rgba.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 7, 77, 177] + [0] * 762)
    pal.save(a / "04_palette.png")
    b.mkdir()
    pal.save(b / "05.gif")
    sixteen = Image.fromarray(np.full((8, 8), 32896, dtype=np.uint16))  # I;16, half of 65535
    sixteen.save(b / "06_16bit.png")
    solid(b / "07.tiff", (1, 2, 3))
    solid(b / "08.webp", (40, 50, 60), lossless=True)
    solid(b / "09.bmp", (90, 80, 70))
    ds = load_image_folder(tmp_path, image_size=(8, 8), channels=3)
    px = ds.images[:, :, 4, 4].tolist()
    assert np.abs(np.array(px[0]) - [200, 100, 50]).max() <= 3  # JPEG at quality 100
    assert px[1:] == [[100] * 3, [10, 20, 30], [7, 77, 177], [7, 77, 177], [128] * 3, [1, 2, 3], [40, 50, 60],
                      [90, 80, 70]]
    assert ds.images[2, :, 0, 0].tolist() == [255, 255, 255]


def test_natural_size_and_channels_come_from_the_first_image(tmp_path):
    solid(tmp_path / "a" / "1.png", 30, size=(12, 6), mode="L")  # W=12, H=6
    solid(tmp_path / "b" / "1.png", (255, 0, 0), size=(24, 12))
    ds = load_image_folder(tmp_path)
    assert ds.images.shape == (2, 1, 6, 12)
    # Red in ITU-R 601-2 luma, as Pillow computes it: (255 * 19595 + 32768) >> 16.
    assert ds.images[1, 0, 3, 6] == (255 * 19595 + 32768) >> 16 == 76


def test_mixed_sizes_resized_to_the_requested_size(tmp_path):
    solid(tmp_path / "a" / "small.png", (10, 20, 30), size=(5, 3))
    solid(tmp_path / "b" / "big.png", (40, 50, 60), size=(100, 70))
    ds = load_image_folder(tmp_path, image_size=(16, 20), channels=3)
    assert ds.images.shape == (2, 3, 16, 20)
    assert (ds.images[0].permute(1, 2, 0) == torch.tensor([10, 20, 30], dtype=torch.uint8)).all()
    assert (ds.images[1].permute(1, 2, 0) == torch.tensor([40, 50, 60], dtype=torch.uint8)).all()


def test_exif_orientation_is_applied(tmp_path):
    # Stored 32 wide and 16 high, left half black, right half white; Orientation 6 says "rotate
    # 90 degrees clockwise to display", which puts the left half on top: 16 wide, 32 high.
    stored = np.zeros((16, 32, 3), dtype=np.uint8)
    stored[:, 16:] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "a").mkdir()
    Image.fromarray(stored).save(tmp_path / "a" / "rotated.jpg", exif=exif, quality=95)
    solid(tmp_path / "b" / "plain.png", (0, 0, 0), size=(40, 40))
    ds = load_image_folder(tmp_path)
    assert ds.images.shape[1:] == (3, 32, 16)
    top, bottom = ds.images[0, :, :12].float().mean(), ds.images[0, :, 20:].float().mean()
    assert top < 10 and bottom > 245


def test_unreadable_files_are_skipped_with_one_warning(tmp_path):
    for i in range(3):
        solid(tmp_path / "a" / f"{i}.png", (i, i, i))
        solid(tmp_path / "b" / f"{i}.png", (9, 9, 9))
    (tmp_path / "a" / "1.png").write_bytes(b"")  # zero bytes
    good = (tmp_path / "b" / "0.png").read_bytes()
    (tmp_path / "b" / "2.png").write_bytes(good[:40])  # cut short
    (tmp_path / "b" / "notes.txt").write_text("not an image, not counted")
    with pytest.warns(DataWarning) as record:
        ds = load_image_folder(tmp_path)
    assert len(record) == 1
    message = str(record[0].message)
    assert "Skipped 2 " in message and "a/1.png" in message and "b/2.png" in message
    assert ds.labels.tolist() == [0, 0, 1, 1]
    assert ds.images[:2, 0, 0, 0].tolist() == [0, 2]
    # The cached copy remembers what was skipped and says so again.
    with pytest.warns(DataWarning, match="Skipped 2 "):
        load_image_folder(tmp_path)


def test_many_unreadable_files_are_counted_not_all_named(tmp_path):
    for i in range(12):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / f"bad{i:02d}.jpg").write_bytes(b"junk")
    solid(tmp_path / "a" / "ok.png", 1)
    solid(tmp_path / "b" / "ok.png", 2)
    with pytest.warns(DataWarning, match="Skipped 12 .*bad09.jpg and 2 more"):
        ds = load_image_folder(tmp_path)
    assert len(ds) == 2


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "cats").mkdir()
    (tmp_path / "dogs").mkdir()
    with pytest.raises(DataError, match="No images found"):
        load_image_folder(tmp_path)


def test_single_class_is_an_error(tmp_path):
    solid(tmp_path / "cats" / "1.png", 0)
    (tmp_path / "dogs").mkdir()  # no images: not a class
    with pytest.raises(DataError, match=r"one class only \(cats\)"):
        load_image_folder(tmp_path)


def test_all_files_unreadable_is_an_error(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"nope")
    with pytest.raises(DataError, match="could be read"):
        load_image_folder(tmp_path)


def test_split_layout_shares_one_class_list(tmp_path):
    solid(tmp_path / "train" / "cat" / "1.png", (1, 1, 1))
    solid(tmp_path / "train" / "dog" / "1.png", (2, 2, 2))
    solid(tmp_path / "val" / "dog" / "1.png", (3, 3, 3))  # val has no cat
    solid(tmp_path / "test" / "cat" / "1.png", (4, 4, 4))
    solid(tmp_path / "test" / "emu" / "1.png", (5, 5, 5))  # a class only test has
    assert folder_splits(tmp_path) == ("train", "val", "test")
    val = load_image_folder(tmp_path, "val")
    assert val.classes == ("cat", "dog", "emu")
    assert val.labels.tolist() == [1] and val.images[0, 0, 0, 0] == 3
    test = load_image_folder(tmp_path, "test")
    assert test.labels.tolist() == [0, 2] and test.images[:, 0, 0, 0].tolist() == [4, 5]
    assert "(test)" in test.source


def test_split_without_images_is_an_error(tmp_path):
    solid(tmp_path / "train" / "cat" / "1.png", 1)
    solid(tmp_path / "train" / "dog" / "1.png", 2)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="No images found in .*val"):
        load_image_folder(tmp_path, "val")


def test_parallel_decoding_keeps_order(tmp_path, monkeypatch):
    # Force the worker pool on a small folder, with chunks that split the classes unevenly.
    monkeypatch.setattr(image_folder, "_PARALLEL_MIN", 0)
    monkeypatch.setattr(image_folder, "_CHUNK", 3)
    for i in range(7):
        solid(tmp_path / "a" / f"{i}.png", (i, 0, 0))
        solid(tmp_path / "b" / f"{i}.png", (100 + i, 0, 0))
    (tmp_path / "a" / "3.png").write_bytes(b"broken")
    with pytest.warns(DataWarning, match="a/3.png"):
        ds = load_image_folder(tmp_path)
    assert ds.images[:, 0, 0, 0].tolist() == [0, 1, 2, 4, 5, 6] + [100 + i for i in range(7)]
    assert ds.labels.tolist() == [0] * 6 + [1] * 7


def test_second_load_is_served_from_the_cache(tmp_path, convnet_home):
    data = tmp_path / "data"
    solid(data / "a" / "1.bmp", (10, 10, 10))
    solid(data / "b" / "1.bmp", (20, 20, 20))
    assert load_image_folder(data).images[:, 0, 0, 0].tolist() == [10, 20]
    assert len(list((convnet_home / "cache").glob("*.npz"))) == 1
    # Same size and modification time: the cache cannot tell, so it answers with the old pixels.
    path = data / "a" / "1.bmp"
    stat = path.stat()
    solid(path, (11, 11, 11))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert load_image_folder(data).images[:, 0, 0, 0].tolist() == [10, 20]


def test_changed_or_added_files_are_read_again(tmp_path, convnet_home):
    solid(tmp_path / "a" / "1.bmp", (10, 10, 10))
    solid(tmp_path / "b" / "1.bmp", (20, 20, 20))
    load_image_folder(tmp_path)
    path = tmp_path / "a" / "1.bmp"
    solid(path, (12, 12, 12))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert load_image_folder(tmp_path).images[:, 0, 0, 0].tolist() == [12, 20]
    solid(tmp_path / "b" / "2.bmp", (30, 30, 30))
    assert load_image_folder(tmp_path).images[:, 0, 0, 0].tolist() == [12, 20, 30]
    assert len(list((convnet_home / "cache").glob("*.npz"))) == 1  # the stale entries are gone
    # Another requested size is another cache entry, kept beside the first.
    assert load_image_folder(tmp_path, image_size=(4, 4)).images.shape == (3, 3, 4, 4)
    assert len(list((convnet_home / "cache").glob("*.npz"))) == 2


def test_unwritable_cache_only_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "home_is_a_file"
    blocker.write_text("")
    monkeypatch.setenv("CONVNET_HOME", str(blocker))
    solid(tmp_path / "data" / "a" / "1.png", 1)
    solid(tmp_path / "data" / "b" / "1.png", 2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        ds = load_image_folder(tmp_path / "data")
    assert len(ds) == 2
    assert [r.category for r in record] == [DataWarning] and "CONVNET_HOME" in str(record[0].message)


@pytest.mark.parametrize(
    "name, expected",
    [("cat.jpg", True), ("CAT.JPEG", True), ("a/b/x.png", True), (".hidden.png", False), ("notes.txt", False),
     ("png", False), ("archive.png.gz", False), ("trailing.", False)],
)
def test_is_image_file_by_name_for_strings_and_paths(name, expected):
    from pathlib import Path

    from convnet.data.images import is_image_file

    assert is_image_file(name) is expected and is_image_file(Path(name)) is expected
