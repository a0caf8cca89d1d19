"""Decoding user images: modes converted to H×W×3 uint8 RGB, EXIF orientation applied, clear errors otherwise."""
import io

import numpy as np
import pytest
from PIL import Image

from m2n2_core.image_io import ImageError, as_rgb_uint8, load_image


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def check_rgb(a: np.ndarray, h: int, w: int) -> None:
    assert isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.shape == (h, w, 3)


def test_rgb_png_round_trips_from_bytes_path_and_pil(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    data = encode(Image.fromarray(rgb), "PNG")
    (tmp_path / "x.png").write_bytes(data)
    for src in (data, bytearray(data), tmp_path / "x.png", str(tmp_path / "x.png"), Image.fromarray(rgb)):
        out = load_image(src)
        check_rgb(out, 5, 7)
        np.testing.assert_array_equal(out, rgb)


def test_grayscale_is_repeated_into_three_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(encode(Image.fromarray(gray, "L"), "PNG"))
    check_rgb(out, 3, 4)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_is_composited_on_white():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)   # opaque
    rgba[0, 1] = (200, 0, 0, 0)      # fully transparent → white
    rgba[0, 2] = (0, 0, 0, 128)      # half-transparent black → mid grey
    out = load_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    check_rgb(out, 2, 3)
    assert out[0, 0].tolist() == [10, 20, 30]
    assert out[0, 1].tolist() == [255, 255, 255]
    assert all(abs(v - 127) <= 2 for v in out[0, 2].tolist())


def test_palette_image_is_expanded():
    img = Image.new("P", (4, 2))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    img.putdata([0, 1, 2, 1, 2, 1, 0, 0])
    out = load_image(encode(img, "PNG"))
    check_rgb(out, 2, 4)
    assert out[0, 1].tolist() == [255, 0, 0] and out[0, 2].tolist() == [0, 0, 255] and out[1, 3].tolist() == [0, 0, 0]


def test_sixteen_bit_grayscale_is_rescaled_to_eight_bits():
    a = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    out = load_image(encode(Image.fromarray(a), "PNG"))
    check_rgb(out, 1, 3)
    assert out[0, :, 0].tolist() == [0, 128, 255]
    assert (out == out[:, :, :1]).all()


def test_cmyk_is_converted_to_rgb():
    img = Image.new("CMYK", (3, 2), (0, 255, 255, 0))  # full magenta + yellow = red
    out = load_image(encode(img, "TIFF"))
    check_rgb(out, 2, 3)
    assert (out == np.array([255, 0, 0], dtype=np.uint8)).all()


@pytest.mark.parametrize("orientation, corner_after", [(6, (0, 1)), (8, (3, 0)), (3, (1, 3))])
def test_exif_orientation_is_applied(orientation, corner_after):
    # 40 wide × 20 high, black with a white 10×10 block marking the stored top-left corner
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:10, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = load_image(encode(Image.fromarray(a), "JPEG", exif=exif.tobytes(), quality=95))
    rotated = orientation in (6, 8)
    check_rgb(out, 40 if rotated else 20, 20 if rotated else 40)
    # 6: rotate 90° clockwise (top-left → top-right), 8: 90° anticlockwise (→ bottom-left), 3: 180°
    blocks = out.reshape(out.shape[0] // 10, 10, out.shape[1] // 10, 10, 3).mean(axis=(1, 3, 4))
    assert np.unravel_index(np.argmax(blocks), blocks.shape) == corner_after


def test_truncated_jpeg_is_an_image_error():
    data = encode(Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="truncated or corrupt"):
        load_image(data[: len(data) // 2])


def test_non_image_bytes_are_an_image_error():
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"this is plain text, not a picture")


def test_empty_bytes_are_an_image_error():
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_missing_file_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "nope.png")


def test_too_many_pixels_is_an_image_error():
    data = encode(Image.new("RGB", (30, 20)), "PNG")
    with pytest.raises(ImageError, match="600 pixels, more than the limit of 599"):
        load_image(data, max_pixels=599)
    check_rgb(load_image(data, max_pixels=600), 20, 30)


def test_image_error_is_a_value_error():
    assert issubclass(ImageError, ValueError)


@pytest.mark.parametrize("array, expected", [
    (np.full((2, 2), 7, dtype=np.uint8), [7, 7, 7]),
    (np.full((2, 2, 1), 7, dtype=np.uint8), [7, 7, 7]),
    (np.full((2, 2, 4), 9, dtype=np.uint8), [9, 9, 9]),
    (np.full((2, 2, 3), 0.5, dtype=np.float32), [128, 128, 128]),
    (np.full((2, 2, 3), 65535, dtype=np.uint16), [255, 255, 255]),
    (np.ones((2, 2, 3), dtype=bool), [255, 255, 255]),
])
def test_arrays_are_converted(array, expected):
    out = as_rgb_uint8(array)
    check_rgb(out, 2, 2)
    assert out[1, 1].tolist() == expected


@pytest.mark.parametrize("array, message", [
    (np.zeros((2, 2, 2), dtype=np.uint8), "expected an H×W×3"),
    (np.zeros((0, 4, 3), dtype=np.uint8), "no pixels"),
    (np.full((2, 2, 3), np.nan, dtype=np.float32), "non-finite"),
])
def test_bad_arrays_are_image_errors(array, message):
    with pytest.raises(ImageError, match=message):
        as_rgb_uint8(array)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_decoded_arrays_are_writable(mode):
    img = Image.new(mode, (4, 3))
    for src in (encode(img, "PNG"), img):
        out = load_image(src)
        assert out.flags.writeable
        out[0, 0] = 1  # callers may draw on the array they get


def test_too_many_pixels_in_an_array_is_an_image_error():
    with pytest.raises(ImageError, match="more than the limit of 599"):
        load_image(np.zeros((20, 30, 3), dtype=np.uint8), max_pixels=599)
    check_rgb(load_image(np.zeros((20, 30), dtype=np.uint8), max_pixels=600), 20, 30)
