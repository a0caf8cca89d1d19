"""Parsing Label Studio's click context: rules, error messages, and fuzzing (only ContextError may escape)."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from backend.errors import ContextError
from backend.keypoints import parse_context, to_pixels
from backend_fixtures import keypoint


def test_no_context_means_no_clicks():
    assert parse_context(None, 10) is None
    assert parse_context({}, 10) is None
    assert parse_context({"result": []}, 10) is None


def test_polarity_rules():
    regions = [keypoint(10, 10, positive=None, rid="a"), keypoint(20, 20, positive=False, rid="b"),
               keypoint(30, 30, positive=None, rid="c"), keypoint(40, 40, positive=True, rid="d")]
    regions[2]["value"]["positive"] = False           # value.positive is honoured
    regions[3]["value"]["positive"] = False           # is_positive wins over value.positive
    clicks = parse_context({"result": regions}, 10).clicks
    assert [c.positive for c in clicks] == [True, False, False, True]


def test_non_keypoint_regions_are_ignored_next_to_keypoints():
    clickset = parse_context({"result": [{"type": "rectanglelabels"}, keypoint(50, 50)]}, 10)
    assert len(clickset.clicks) == 1 and clickset.clicks[0].index == 1 and clickset.original_size == (64, 48)


def test_to_pixels_scales_percentages():
    clicks = parse_context({"result": [keypoint(0, 0), keypoint(50, 25, positive=False), keypoint(100, 100)]},
                           10).clicks
    points, labels = to_pixels(clicks, 200, 100)
    assert points.tolist() == [[0, 0], [100, 25], [200, 100]] and labels.tolist() == [1, 0, 1]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r["value"].update(x=float("nan")), "value.x=nan"),
    (lambda r: r["value"].update(y=-0.1), "value.y=-0.1"),
    (lambda r: r["value"].update(x=100.5), "value.x=100.5"),
    (lambda r: r["value"].update(x="50"), "must be a number"),
    (lambda r: r["value"].update(y=True), "must be a number"),
    (lambda r: r["value"].update(x=10 ** 400), "outside the image"),
    (lambda r: r.update(original_width=0), "original_width"),
    (lambda r: r.update(original_width=-5), "original_width"),
    (lambda r: r.update(original_height=12.5), "original_height"),
    (lambda r: r.pop("original_height"), "together"),
    (lambda r: r.update(is_positive="yes"), "is_positive"),
    (lambda r: r["value"].update(keypointlabels=[]), "exactly one label"),
    (lambda r: r["value"].update(keypointlabels=["a", "b"]), "exactly one label"),
    (lambda r: r.update(value=None), "value must be an object"),
])
def test_bad_keypoints_are_named(mutate, message):
    region = keypoint(50, 50, rid="abc")
    mutate(region)
    with pytest.raises(ContextError, match=message) as info:
        parse_context({"result": [keypoint(1, 1, rid="ok"), region]}, 10)
    assert "keypoint #1 (id 'abc')" in info.value.message


@pytest.mark.parametrize("context, message", [
    ([1, 2], "params.context must be an object"),
    ({"result": "x"}, "must be a list"),
    ({"result": [{"type": "rectanglelabels"}]}, "no keypointlabels regions"),
])
def test_bad_context_shapes(context, message):
    with pytest.raises(ContextError, match=message):
        parse_context(context, 10)


def test_disagreeing_sizes_and_too_many_points():
    with pytest.raises(ContextError, match="disagree on the image size"):
        parse_context({"result": [keypoint(1, 1, size=(64, 48)), keypoint(2, 2, size=(65, 48))]}, 10)
    with pytest.raises(ContextError, match="too many clicks: 11 keypoints, at most 10"):
        parse_context({"result": [keypoint(i, i, rid=str(i)) for i in range(11)]}, 10)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)

region_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["keypointlabels", "brushlabels", 3])},
    optional={"value": st.fixed_dictionaries({}, optional={
                  "x": json_values | st.floats(), "y": json_values | st.floats(),
                  "keypointlabels": st.lists(st.text(max_size=4) | st.integers(), max_size=2) | json_values,
                  "positive": json_values}) | json_values,
              "is_positive": json_values, "original_width": json_values | st.integers(-5, 10 ** 6),
              "original_height": json_values | st.integers(-5, 10 ** 6), "id": json_values,
              "from_name": json_values})


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.fixed_dictionaries({"result": st.lists(region_like, max_size=6) | json_values})))
def test_fuzzed_contexts_raise_only_context_error(context):
    try:
        clickset = parse_context(context, 5)
    except ContextError as exc:
        assert exc.message and exc.status == 422
        return
    if clickset is not None:
        for c in clickset.clicks:
            assert 0 <= c.x <= 100 and 0 <= c.y <= 100 and isinstance(c.positive, bool) and c.label
        points, _ = to_pixels(clickset.clicks, 7, 9)
        assert np.all(np.isfinite(points)) and points[:, 0].max() <= 7 and points[:, 1].max() <= 9
        assert not any(math.isnan(c.x) for c in clickset.clicks)
