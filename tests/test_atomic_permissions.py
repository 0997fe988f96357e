"""Atomic writes leave the permissions of a plain new file or folder (0666 / 0777 less the umask)."""

import os
import stat

import pytest
import torch

from ditkit.io.checkpoint import atomic_dir, atomic_write, save_json, save_model, save_tensors, usual_mode


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_usual_mode_is_what_open_and_mkdir_give(tmp_path, umask):
    (tmp_path / "plain.txt").write_text("x")
    (tmp_path / "plain").mkdir()
    assert usual_mode() == mode(tmp_path / "plain.txt") == 0o666 & ~umask
    assert usual_mode(directory=True) == mode(tmp_path / "plain") == 0o777 & ~umask


def test_atomic_file_and_folder_get_the_usual_permissions(tmp_path, umask):
    with atomic_write(tmp_path / "a.txt") as tmp:
        tmp.write_text("hello")
    save_json(tmp_path / "b.json", {"k": 1})
    save_tensors(tmp_path / "c.safetensors", {"w": torch.zeros(2)})  # safetensors alone writes 0600
    with atomic_dir(tmp_path / "folder") as tmp:
        (tmp / "inside.txt").write_text("x")
    save_model(tmp_path / "model", {"w": torch.zeros(2)}, {"kind": "test"})
    for f in ("a.txt", "b.json", "c.safetensors", "folder/inside.txt", "model/model.safetensors", "model/config.json"):
        assert mode(tmp_path / f) == 0o666 & ~umask, f
    for d in ("folder", "model"):
        assert mode(tmp_path / d) == 0o777 & ~umask, d
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.json", "c.safetensors", "folder", "model"]  # no temporary leftovers
