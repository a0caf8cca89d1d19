"""A small run of benchmarks/load.py: concurrent annotators against a real gunicorn backend on loopback.

Checks correctness under concurrency (every request answered, every mask equal to the sequential in-process mask)
and the report's bookkeeping; timing numbers are printed by the benchmark, never asserted.
"""
from __future__ import annotations

import numpy as np

from benchmarks import load


def test_concurrent_annotators_get_the_sequential_masks(tmp_path):
    result = load.run_load(annotators=3, image_count=2, clicks=2, resolution=16, workers=1, threads=3,
                           time_limit_s=300, request_timeout_s=120, work=tmp_path, use_grabcut=False)
    assert [r.error for r in result.errors] == []
    assert len(result.replies) == 3 * 2
    assert sorted((r.annotator, len(r.clicks)) for r in result.replies) == [(a, n) for a in range(3) for n in (1, 2)]
    assert result.mismatches == []
    assert all(r.mask.shape == (120, 160) and r.mask.any() for r in result.replies)
    assert result.peak_rss > 0


def test_annotator_clicks_alternate_and_land_on_the_matching_side(tmp_path):
    image = load.synthetic_images(1, tmp_path)[0]
    clicks = load.annotator_clicks(image, 5, seed=3)
    h, w = image.mask.shape
    points, labels = load.to_pixels(clicks, w, h)
    assert labels.tolist() == [1, 0, 1, 0, 1]
    for (x, y), label in zip(points, labels):
        assert image.mask[int(y), int(x)] == bool(label)


def test_check_masks_reports_a_wrong_mask(tmp_path):
    image = load.synthetic_images(1, tmp_path)[0]
    clicks = load.annotator_clicks(image, 1, seed=0)
    settings = load.Settings.from_env(load.backend_environment(16, 1, 1, tmp_path))
    wrong = load.Reply(0, 0, clicks, 0.1, mask=np.zeros(image.mask.shape, dtype=bool))
    mismatches = load.check_masks([wrong], [image], settings)
    assert len(mismatches) == 1 and "synthetic_0.png, 1 click(s)" in mismatches[0]


def test_percentile_is_nearest_rank():
    values = [float(v) for v in range(1, 21)]
    assert load.percentile(values, 50) == 10.0
    assert load.percentile(values, 95) == 19.0
    assert load.percentile([3.0], 95) == 3.0
