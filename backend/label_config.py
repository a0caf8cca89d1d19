"""Read the project's label config: the Image, its smart KeyPointLabels and the BrushLabels masks are written to."""
from __future__ import annotations

import re
from functools import lru_cache
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

from label_studio_sdk.label_interface import LabelInterface

from .errors import LabelConfigError

_DOCTYPE = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


@dataclass(frozen=True)
class BrushControl:
    name: str
    labels: Tuple[str, ...]


@dataclass(frozen=True)
class ImageTarget:
    """One Image tag with the controls that point at it."""
    name: str                                  #: the Image tag's name (``to_name`` of results)
    data_key: str                              #: task.data key holding the image URL (``value="$image"`` → "image")
    keypoints: Tuple[str, ...]                 #: names of the smart KeyPointLabels controls on this image
    brushes: Tuple[BrushControl, ...]

    def brush_for(self, label: str) -> Tuple[BrushControl, str]:
        """The BrushLabels control and label a keypoint label writes to.

        The brush label of the same name wins; otherwise, when there is exactly one brush label in total, that one.
        """
        for brush in self.brushes:
            if label in brush.labels:
                return brush, label
        every = [(b, lab) for b in self.brushes for lab in b.labels]
        if len(every) == 1:
            return every[0]
        names = ", ".join(f"{b.name}: {list(b.labels)}" for b in self.brushes)
        raise LabelConfigError(f"keypoint label {label!r} has no BrushLabels label of the same name on image "
                               f"{self.name!r} (available: {names}); add <Label value={label!r}/> to a BrushLabels")


@dataclass(frozen=True)
class LabelSetup:
    images: Dict[str, ImageTarget]             #: by Image name; only images with a smart keypoint control and brushes
    keypoint_to_image: Dict[str, str]          #: smart KeyPointLabels name → Image name

    def target(self, keypoint_control: Optional[str]) -> ImageTarget:
        """The image a keypoint control belongs to (the only one when the click names no control)."""
        if keypoint_control is None:
            if len(self.images) == 1:
                return next(iter(self.images.values()))
            raise LabelConfigError("the click does not name its KeyPointLabels (from_name) and the label config has "
                                   f"several images: {sorted(self.images)}")
        if keypoint_control not in self.keypoint_to_image:
            raise LabelConfigError(f"from_name {keypoint_control!r} is not a smart KeyPointLabels of the label config "
                                   f"(known: {sorted(self.keypoint_to_image)})")
        return self.images[self.keypoint_to_image[keypoint_control]]


def _is_smart(control) -> bool:
    return str(control.attr.get("smart", "")).lower() == "true" or \
        str(control.attr.get("smartOnly", "")).lower() == "true"


def parse_label_config(xml: object) -> LabelSetup:
    """Parse and check a label config; raises LabelConfigError naming what is missing or wrong.

    Requires at least one Image with a smart KeyPointLabels (``smart="true"``) and a BrushLabels pointing at it.
    Configs with a DOCTYPE or ENTITY declaration are refused (XML entity expansion).
    """
    if not isinstance(xml, str) or not xml.strip():
        raise LabelConfigError("the label config is empty or not a string")
    if _DOCTYPE.search(xml):
        raise LabelConfigError("the label config must not contain DOCTYPE or ENTITY declarations")
    try:
        interface = LabelInterface(xml)
    except Exception as exc:  # the SDK raises several unrelated types for bad XML
        raise LabelConfigError(f"the label config is not valid: {exc}") from None
    images = {o.name: o for o in interface.objects if o.tag == "Image"}
    if not images:
        raise LabelConfigError("the label config has no <Image> tag")
    keypoints = [c for c in interface.controls if c.tag == "KeyPointLabels"]
    if not keypoints:
        raise LabelConfigError('the label config has no <KeyPointLabels smart="true"> (the clicks M2N2 answers)')
    smart = [c for c in keypoints if _is_smart(c)]
    if not smart:
        raise LabelConfigError(f'KeyPointLabels {[c.name for c in keypoints]} must have smart="true" so that '
                               "Label Studio sends clicks to the backend")
    brushes = [c for c in interface.controls if c.tag == "BrushLabels"]
    if not brushes:
        raise LabelConfigError("the label config has no <BrushLabels> (where M2N2 writes its masks)")
    targets: Dict[str, ImageTarget] = {}
    keypoint_to_image: Dict[str, str] = {}
    for name, image in images.items():
        on_image = [c.name for c in smart if name in (c.to_name or [])]
        brush_here = tuple(BrushControl(c.name, tuple(c.labels or ())) for c in brushes if name in (c.to_name or []))
        if not on_image or not brush_here:
            continue
        if not all(b.labels for b in brush_here):
            raise LabelConfigError(f"BrushLabels {[b.name for b in brush_here if not b.labels]} on image {name!r} "
                                   "have no <Label> children")
        value = str(image.value or "")
        if not value.startswith("$") or len(value) < 2:
            raise LabelConfigError(f"Image {name!r} must take its URL from the task data (value=\"$field\"), "
                                   f"got value={value!r}")
        targets[name] = ImageTarget(name, value[1:], tuple(on_image), brush_here)
        for k in on_image:
            keypoint_to_image[k] = name
    if not targets:
        raise LabelConfigError("no Image has both a smart KeyPointLabels and a BrushLabels pointing at it (toName); "
                               f"images: {sorted(images)}, smart KeyPointLabels → {[(c.name, c.to_name) for c in smart]}"
                               f", BrushLabels → {[(c.name, c.to_name) for c in brushes]}")
    return LabelSetup(targets, keypoint_to_image)


@lru_cache(maxsize=64)
def _cached(xml: str) -> LabelSetup:
    return parse_label_config(xml)


def label_setup(xml: object) -> LabelSetup:
    """``parse_label_config`` with the results for recent config strings memoised (errors are not cached)."""
    return _cached(xml) if isinstance(xml, str) else parse_label_config(xml)
