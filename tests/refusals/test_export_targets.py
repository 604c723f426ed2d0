"""What `convnet export --force` refuses to replace: anything at the target that is not what export
writes there. An .onnx target must be a regular file and a Triton model's target a folder, neither
reached through a symbolic link; a FIFO, socket, device or link is left exactly as it was.

(A root user once ran `export --out /dev/null --force` and /dev/null became a regular file. The
device case below makes its own character device with /dev/null's numbers in the test's folder,
so that a regression cannot break the machine running the tests.)
"""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from tests.refusals.conftest import assert_one_sentence


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()


def _device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's major and minor numbers
    except PermissionError:
        pytest.skip("this container may not make device nodes")


def _link_to_a_file_outside(path: Path) -> None:
    outside = path.parent.parent / "outside" / "notes.txt"
    outside.parent.mkdir()
    outside.write_text("a user's notes\n")
    path.symlink_to(outside)


def _link_to_a_folder_outside(path: Path) -> None:
    outside = path.parent.parent / "outside"
    outside.mkdir()
    (outside / "notes.txt").write_text("a user's notes\n")
    path.symlink_to(outside, target_is_directory=True)


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "nowhere")


def _folder(path: Path) -> None:
    path.mkdir()
    (path / "notes.txt").write_text("a user's notes\n")


def _file(path: Path) -> None:
    path.write_text("a user's notes\n")


# case -> (how to make it, the words the refusal uses for it)
ODD_TARGETS = {
    "a FIFO": (_fifo, "is a FIFO"),
    "a socket": (_socket, "is a socket"),
    "a device": (_device, "is a character device"),
    "a link to a file outside": (_link_to_a_file_outside, "is a symbolic link"),
    "a link to a folder outside": (_link_to_a_folder_outside, "is a symbolic link"),
    "a dangling link": (_dangling_link, "is a symbolic link"),
}
ONNX_TARGETS = {**ODD_TARGETS, "a folder": (_folder, "is a folder")}
TRITON_TARGETS = {**ODD_TARGETS, "a regular file": (_file, "is a regular file")}


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (links not followed) -> its kind, device numbers, link target and bytes."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            content = (path.read_bytes() if stat.S_ISREG(st.st_mode)
                       else os.readlink(path) if stat.S_ISLNK(st.st_mode) else None)
            found[str(path.relative_to(root))] = (kind, st.st_rdev, content)
    return found


@pytest.mark.parametrize("case", list(ONNX_TARGETS))
def test_an_onnx_target_that_is_not_a_regular_file_is_refused_and_left_alone(case, model_file, tmp_path, convnet):
    make, words = ONNX_TARGETS[case]
    (tmp_path / "out").mkdir()
    target = tmp_path / "out" / "model.onnx"
    make(target)
    before = snapshot(tmp_path)
    result = convnet("export", model_file, "--out", target, "--force")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", str(target), words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", list(TRITON_TARGETS))
def test_a_triton_model_target_that_is_not_a_folder_is_refused_and_left_alone(case, model_file, tmp_path, convnet):
    make, words = TRITON_TARGETS[case]
    (tmp_path / "repo").mkdir()
    target = tmp_path / "repo" / "m"
    make(target)
    before = snapshot(tmp_path)
    result = convnet("export", model_file, "--format", "triton", "--out", tmp_path / "repo", "--name", "m", "--force")
    assert result.status == 2, result
    assert_one_sentence(result.err, "error: ", str(target), words)
    assert snapshot(tmp_path) == before
