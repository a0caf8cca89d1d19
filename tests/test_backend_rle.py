"""Brush RLE: the mask → RLE → SDK decode round trip, and mask resampling."""
import numpy as np
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays
from label_studio_sdk.converter.brush import decode_rle

from backend.rle import fit_mask, mask_to_rle


def decode(rle, height, width):
    """Label Studio's decoder: RGBA bytes; our masks have 255 in every channel."""
    return decode_rle(rle).reshape(height, width, 4)[:, :, 0]


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_round_trip(mask):
    decoded = decode(mask_to_rle(mask), *mask.shape)
    assert np.array_equal(decoded, np.where(mask, 255, 0))


def test_round_trip_long_runs():
    mask = np.zeros((300, 400), bool)
    mask[50:250, 20:380] = True  # runs longer than 2**16 RGBA bytes
    assert np.array_equal(decode(mask_to_rle(mask), 300, 400) == 255, mask)


def test_fit_mask_keeps_matching_size_and_resamples_otherwise():
    mask = np.zeros((4, 6), bool)
    mask[:2, :3] = True
    assert fit_mask(mask, (6, 4)) is mask
    big = fit_mask(mask, (12, 8))
    assert big.shape == (8, 12) and big[:4, :6].all() and not big[4:].any() and not big[:, 6:].any()
