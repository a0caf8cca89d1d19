import numpy as np
import pytest
from PIL import Image

from m2n2_core.evaluation.datasets import Dataset, DatasetError


def _write(folder, name, array):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(folder / name)


def _image(h=6, w=8):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_grabcut_layout_pairs_by_stem_and_reads_the_ignore_band(tmp_path):
    mask = np.zeros((6, 8), np.uint8)
    mask[1:5, 2:6] = 255
    mask[1, 2:6] = 128
    for stem in ("b", "a"):
        _write(tmp_path / "data_GT", f"{stem}.jpg", _image())
        _write(tmp_path / "boundary_GT", f"{stem}.bmp", mask)
    ds = Dataset("grabcut", tmp_path)
    assert [p[0] for p in ds.pairs] == ["a", "b"]
    s = ds[0]
    assert s.name == "a" and s.image.shape == (6, 8, 3) and s.image.dtype == np.uint8
    assert s.gt.sum() == 12 and s.ignore.sum() == 4 and not (s.gt & s.ignore).any()
    assert len(Dataset("grabcut", tmp_path, limit=1)) == 1


def test_berkeley_layout_reads_like_grabcut(tmp_path):
    mask = np.array([[0, 128, 255]], np.uint8)
    _write(tmp_path / "images", "x.png", _image(1, 3))
    _write(tmp_path / "masks", "x.png", mask)
    s = Dataset("berkeley", tmp_path)[0]
    assert s.gt.tolist() == [[False, False, True]] and s.ignore.tolist() == [[False, True, False]]


def test_davis_layout_takes_any_nonzero_channel_as_object(tmp_path):
    mask = np.zeros((2, 3, 3), np.uint8)
    mask[0, 0, 2] = 1
    mask[1, 2, 0] = 200
    _write(tmp_path / "img", "f.jpg", _image(2, 3))
    _write(tmp_path / "gt", "f.png", mask)
    s = Dataset("davis", tmp_path)[0]
    assert s.gt.tolist() == [[True, False, False], [False, False, True]] and s.ignore is None


def test_folder_layout_thresholds_at_half(tmp_path):
    _write(tmp_path / "images", "k.png", _image(1, 3))
    _write(tmp_path / "masks", "k.png", np.array([[127, 128, 255]], np.uint8))
    s = Dataset("folder", tmp_path)[0]
    assert s.gt.tolist() == [[False, True, True]] and s.ignore is None


def test_missing_folder_and_unpaired_files_are_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="missing folder"):
        Dataset("grabcut", tmp_path)
    _write(tmp_path / "images", "one.png", _image())
    _write(tmp_path / "masks", "two.png", np.zeros((6, 8), np.uint8))
    with pytest.raises(DatasetError, match="images without a mask.*one.*masks without an image.*two"):
        Dataset("folder", tmp_path)
    with pytest.raises(DatasetError, match="not a folder"):
        Dataset("folder", tmp_path / "nowhere")


def test_mask_of_the_wrong_size_is_a_clear_error(tmp_path):
    _write(tmp_path / "images", "s.png", _image(6, 8))
    _write(tmp_path / "masks", "s.png", np.zeros((5, 8), np.uint8))
    with pytest.raises(DatasetError, match="mask is 8×5 but image is 8×6"):
        Dataset("folder", tmp_path)[0]
