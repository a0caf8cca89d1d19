"""`m2n2 segment` (m2n2_core.cli): point syntax, error exits, and the files it writes."""
import argparse
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import m2n2_core.predictor as predictor_module
from m2n2_core.cli import main, parse_point

from core_helpers import REPO_ROOT, affinity_attention, blocks_image, torch_single_thread  # noqa: F401 (fixture)


@pytest.mark.parametrize("text, expected", [
    ("10,20", (10.0, 20.0, 1)), ("10.5, 20 ,+", (10.5, 20.0, 1)), ("3,4,-", (3.0, 4.0, 0)),
    ("3,4,1", (3.0, 4.0, 1)), ("3,4,0", (3.0, 4.0, 0)), ("3,4,pos", (3.0, 4.0, 1)), ("3,4,neg", (3.0, 4.0, 0)),
])
def test_parse_point(text, expected):
    assert parse_point(text) == expected


@pytest.mark.parametrize("text, message", [
    ("10", "X,Y"), ("1,2,+,4", "X,Y"), ("a,b", "must be numbers"), ("1,2,x", "label is"),
])
def test_parse_point_rejects_bad_syntax(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        parse_point(text)


@pytest.fixture()
def image_file(tmp_path):
    path = tmp_path / "blocks.png"
    Image.fromarray(blocks_image(32, 40)).save(path)
    return path


def test_bad_point_syntax_is_an_argparse_error(image_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(image_file), "-p", "10;20", "--out", str(tmp_path / "m.png")])
    assert exc.value.code == 2
    assert "a point is X,Y" in capsys.readouterr().err


def test_points_and_out_are_required(image_file, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", str(image_file), "-p", "1,1"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_missing_image_file_exits_2_with_a_message(tmp_path, capsys):
    code = main(["segment", str(tmp_path / "nope.png"), "-p", "1,1", "--out", str(tmp_path / "m.png")])
    assert code == 2
    assert "no image file" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_non_image_file_exits_2_with_a_message(tmp_path, capsys):
    (tmp_path / "x.png").write_text("not an image")
    code = main(["segment", str(tmp_path / "x.png"), "-p", "1,1", "--out", str(tmp_path / "m.png")])
    assert code == 2 and "not an image" in capsys.readouterr().err


@pytest.fixture()
def colour_affinity_source(monkeypatch):
    """Replace the configured attention source by a hand-made colour affinity (no model, no weights)."""
    class Source:
        name, description = "affinity", "test colour affinity"

        def __init__(self, r):
            self.r = r

        def compute(self, image):
            return affinity_attention(image, self.r)

    monkeypatch.setattr(predictor_module, "make_source", lambda config, device: Source(config.attention_resolution))


@pytest.mark.usefixtures("torch_single_thread", "colour_affinity_source")
def test_segment_writes_the_mask_and_the_overlay(image_file, tmp_path, capsys):
    out, overlay = tmp_path / "m.png", tmp_path / "o.png"
    code = main(["segment", str(image_file), "-p", "13,16", "-p", "28,16,-", "--out", str(out), "--overlay",
                 str(overlay), "--attention", "affinity", "--attention-resolution", "8", "--device", "cpu"])
    assert code == 0
    mask = np.asarray(Image.open(out))
    assert mask.shape == (32, 40) and set(np.unique(mask)) <= {0, 255}
    assert mask[16, 13] == 255 and mask[16, 28] == 0
    assert np.asarray(Image.open(overlay).convert("RGB")).shape == (32, 40, 3)
    printed = capsys.readouterr().out
    assert str(out) in printed and str(overlay) in printed


@pytest.mark.usefixtures("torch_single_thread", "colour_affinity_source")
def test_segment_with_a_point_outside_the_image_exits_2(image_file, tmp_path, capsys):
    code = main(["segment", str(image_file), "-p", "100,16", "--out", str(tmp_path / "m.png"),
                 "--attention", "affinity", "--attention-resolution", "8", "--device", "cpu"])
    assert code == 2 and "outside the 40×32 image" in capsys.readouterr().err
    assert not (tmp_path / "m.png").exists()


def test_python_dash_m_segment_with_the_affinity_source(image_file, tmp_path):
    pytest.importorskip("m2n2_core.attention.affinity", reason="the weight-free affinity source is not on this branch")
    out, overlay = tmp_path / "m.png", tmp_path / "o.png"
    run = subprocess.run([sys.executable, "-m", "m2n2_core.cli", "segment", str(image_file), "-p", "13,16",
                          "-p", "28,16,-", "--out", str(out), "--overlay", str(overlay), "--attention", "affinity",
                          "--attention-resolution", "16", "--device", "cpu"],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    mask = np.asarray(Image.open(out))
    assert mask.shape == (32, 40) and mask[16, 13] == 255 and mask[16, 28] == 0
    assert Image.open(overlay).size == (40, 32)


@pytest.mark.usefixtures("torch_single_thread", "colour_affinity_source")
@pytest.mark.parametrize("name", ["missing-dir/m.png", "m.unknown-extension"])
def test_an_unwritable_output_exits_2_with_a_message(image_file, tmp_path, capsys, name):
    code = main(["segment", str(image_file), "-p", "13,16", "--out", str(tmp_path / name),
                 "--attention", "affinity", "--attention-resolution", "8", "--device", "cpu"])
    assert code == 2 and "cannot write" in capsys.readouterr().err
