"""The M2N2 model class, shaped like label-studio-ml 2.x (``setup``, ``predict``, ``fit``), one per process.

- The predictor loads lazily in a background thread (or synchronously at start with ``M2N2_PRELOAD=1``); its state
  is ``not_loaded`` → ``loading`` → ``loaded`` | ``failed`` (with the reason). A failed load is not retried: fix the
  cause and restart the process.
- Prepared images (attention → balanced transition matrix) are cached by the SHA-256 of the downloaded bytes in a
  byte-bounded LRU with single-flight; attention computations run one at a time per process.
- Out of memory (``torch.OutOfMemoryError`` or ``MemoryError``) while preparing or predicting releases every cached
  image (and the CUDA cache) and answers 503; the next request starts afresh.
- ``predict`` without clicks answers an empty prediction per task and precomputes the tasks' attention in the
  background so that the first click is fast.
- ``fit`` is a no-op: M2N2 is training-free.
"""
from __future__ import annotations

import gc
import hashlib
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

from m2n2_core import __version__
from m2n2_core.config import M2N2Config
from m2n2_core.predictor import M2N2Predictor, PreparedImage

from .cache import ByteLRUCache
from .config import Settings
from .errors import BackendError, ContextError, ModelUnavailable, OutOfMemory, RequestError, TaskError
from .keypoints import Click, ClickSet, parse_context, to_pixels
from .label_config import ImageTarget, LabelSetup, label_setup
from .media import MediaFetcher
from .metrics import LatencyStats
from .rle import fit_mask, mask_to_rle

log = logging.getLogger(__name__)

ASPECT_TOLERANCE = 0.02  #: relative aspect-ratio difference accepted between the browser's and the fetched image
TRAIN_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "START_TRAINING")
_OOM = (torch.OutOfMemoryError, MemoryError)

PredictorFactory = Callable[[M2N2Config], M2N2Predictor]


def model_version(settings: Settings) -> str:
    """``m2n2-<package version>:<attention source>[:<model>]:r<attention resolution>``."""
    source = "affinity" if settings.attention == "affinity" else f"sd:{settings.model}"
    return f"m2n2-{__version__}:{source}:r{settings.attention_resolution}"


class M2N2Model:
    """Answers Label Studio predictions with M2N2 brush masks; safe to call from many threads."""

    def __init__(self, settings: Settings, predictor_factory: Optional[PredictorFactory] = None,
                 fetcher: Optional[MediaFetcher] = None):
        self.settings = settings
        self.config = settings.m2n2_config()
        self.model_version = model_version(settings)
        self.cache: ByteLRUCache[PreparedImage] = ByteLRUCache(settings.cache_bytes)
        self.fetcher = fetcher or MediaFetcher(settings)
        self.stages = LatencyStats()
        self._factory = predictor_factory or M2N2Predictor
        self._state_lock = threading.Lock()
        self._state = "not_loaded"
        self._reason: Optional[str] = None
        self._predictor: Optional[M2N2Predictor] = None
        self._done = threading.Event()
        self._compute_lock = threading.Lock()
        self._oom_count = 0
        self._warmup = ThreadPoolExecutor(settings.warmup_threads, thread_name_prefix="m2n2-warmup") \
            if settings.warmup_threads else None
        self._warm_lock = threading.Lock()
        self._warm_pending: set = set()
        self._warm_counts = {"scheduled": 0, "skipped": 0, "done": 0, "failed": 0}

    # ---- model loading ---------------------------------------------------------------------------------------
    def status(self) -> Dict[str, Any]:
        with self._state_lock:
            return {"state": self._state, "reason": self._reason}

    def start_loading(self) -> None:
        """Begin loading in a background thread unless loading already started."""
        with self._state_lock:
            if self._state != "not_loaded":
                return
            self._state = "loading"
        threading.Thread(target=self._load, name="m2n2-load", daemon=True).start()

    def load(self) -> None:
        """Load now (blocking); raises ModelUnavailable with the reason when loading fails."""
        self.start_loading()
        self._done.wait()
        self._loaded_predictor()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            predictor = self._factory(self.config)
            predictor.load()
        except BaseException as exc:  # any failure (bad path, corrupt weights, OOM) must end in "failed"
            log.exception("loading the M2N2 model (%s) failed", self.model_version)
            with self._state_lock:
                self._state, self._reason = "failed", f"{type(exc).__name__}: {exc}"
        else:
            with self._state_lock:
                self._predictor, self._state = predictor, "loaded"
            log.info("M2N2 model %s loaded on %s in %.1f s", self.model_version, predictor.device,
                     time.perf_counter() - started)
        finally:
            self.stages.observe("load", time.perf_counter() - started)
            self._done.set()

    def _loaded_predictor(self) -> M2N2Predictor:
        with self._state_lock:
            if self._state == "loaded":
                return self._predictor
            if self._state == "failed":
                raise ModelUnavailable(f"the M2N2 model failed to load: {self._reason}", model_state="failed",
                                       reason=self._reason)
        raise ModelUnavailable(f"the M2N2 model is still loading (waited {self.settings.load_wait:g} s, "
                               "M2N2_LOAD_WAIT); retry shortly", model_state="loading")

    def predictor(self, wait: Optional[float]) -> M2N2Predictor:
        """The loaded predictor, starting the load if needed and waiting up to ``wait`` seconds (None: forever)."""
        self.start_loading()
        self._done.wait(wait)
        return self._loaded_predictor()

    # ---- label-studio-ml 2.x shape ---------------------------------------------------------------------------
    def setup(self, label_config: object) -> str:
        """Check the label config (never loads the model) and return the model version."""
        label_setup(label_config)
        return self.model_version

    def fit(self, event: str, data: Dict[str, Any]) -> Dict[str, Any]:
        """No-op: M2N2 is training-free; annotations do not change the model."""
        return {"trained": False, "reason": "M2N2 is training-free; annotations are not used", "event": event}

    def predict(self, tasks: List[Dict[str, Any]], context: Optional[Dict[str, Any]] = None,
                label_config: object = None, **kwargs: Any) -> List[Dict[str, Any]]:
        """One prediction per task: brush regions for the clicks in ``context``; empty without clicks."""
        setup = label_setup(label_config)
        clicks = parse_context(context, self.settings.max_points)
        if clicks is None:
            for task in tasks:
                self._schedule_warmup(setup, task)
            return [self._prediction([]) for _ in tasks]
        if len(tasks) != 1:
            raise RequestError(f"clicks (params.context) apply to exactly one task, got {len(tasks)} tasks")
        predictor = self.predictor(self.settings.load_wait)
        return [self._prediction(self._regions(setup, tasks[0], clicks, predictor))]

    def _prediction(self, regions: List[Dict[str, Any]]) -> Dict[str, Any]:
        # M2N2 has no calibrated confidence, so the score is null rather than an invented number.
        return {"result": regions, "score": None, "model_version": self.model_version}

    # ---- clicks → regions ------------------------------------------------------------------------------------
    def _regions(self, setup: LabelSetup, task: Dict[str, Any], clickset: ClickSet,
                 predictor: M2N2Predictor) -> List[Dict[str, Any]]:
        by_image: Dict[str, List[Click]] = {}
        for click in clickset.clicks:
            by_image.setdefault(setup.target(click.from_name).name, []).append(click)
        regions = []
        for image_name, clicks in by_image.items():
            target = setup.images[image_name]
            url = _task_url(task, target)
            key, prepared = self.prepared(url, task.get("id"), predictor)
            size = _output_size(clickset.original_size, prepared, url)
            groups: Dict[Tuple[str, str], List[Click]] = {}
            for click in clicks:
                brush, label = target.brush_for(click.label)
                groups.setdefault((brush.name, label), []).append(click)
            for (brush_name, label), group in groups.items():
                regions.append(self._region(prepared, target, brush_name, label, group, size))
            self.cache.remeasure(key)  # the prepared image keeps the clicks' distance maps
        return regions

    def _region(self, prepared: PreparedImage, target: ImageTarget, brush_name: str, label: str,
                clicks: List[Click], size: Tuple[int, int]) -> Dict[str, Any]:
        if not any(c.positive for c in clicks):
            raise ContextError(f"label {label!r} has only negative clicks; M2N2 needs at least one positive click "
                               "(a plain click; Alt-click makes a negative one)")
        points, labels = to_pixels(clicks, prepared.width, prepared.height)
        with self._timed("predict"), self._out_of_memory_guard("predicting the mask"):
            mask = prepared.predict(points, labels)
        with self._timed("encode"):
            rle = mask_to_rle(fit_mask(mask, size))
        return {"id": uuid.uuid4().hex[:10], "type": "brushlabels", "from_name": brush_name,
                "to_name": target.name, "original_width": size[0], "original_height": size[1],
                "image_rotation": 0, "value": {"format": "rle", "rle": rle, "brushlabels": [label]}}

    # ---- images ----------------------------------------------------------------------------------------------
    def prepared(self, url: str, task_id: object, predictor: M2N2Predictor) -> Tuple[str, PreparedImage]:
        """(cache key, prepared image) for a task URL: downloaded each time, prepared once per distinct content."""
        with self._timed("fetch"):
            data = self.fetcher.fetch(url, task_id)
        key = hashlib.sha256(data).hexdigest()

        def compute() -> PreparedImage:
            with self._timed("decode"):
                image = self.fetcher.decode(data, url)
            with self._compute_lock, self._timed("prepare"), self._out_of_memory_guard(f"preparing {url}"):
                return predictor.prepare(image)

        return key, self.cache.get_or_compute(key, compute)

    @contextmanager
    def _out_of_memory_guard(self, what: str) -> Iterator[None]:
        try:
            yield
        except _OOM as exc:
            with self._state_lock:
                self._oom_count += 1
            self.cache.clear()
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.error("out of memory while %s (%s); released the image cache", what, type(exc).__name__)
            raise OutOfMemory(f"out of memory while {what}; the image cache was released, retry the request "
                              "(lower M2N2_ATTENTION_RESOLUTION or M2N2_CACHE_BYTES if this repeats)") from None

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stages.observe(stage, time.perf_counter() - started)

    # ---- background warm-up ----------------------------------------------------------------------------------
    def _schedule_warmup(self, setup: LabelSetup, task: Dict[str, Any]) -> None:
        if self._warmup is None:
            return
        for target in setup.images.values():
            try:
                url = _task_url(task, target)
            except TaskError as exc:
                log.warning("no warm-up for task %s: %s", task.get("id"), exc.message)
                continue
            key = (url, task.get("id"))
            with self._warm_lock:
                if key in self._warm_pending or len(self._warm_pending) >= self.settings.warmup_queue:
                    self._warm_counts["skipped"] += 1
                    continue
                self._warm_pending.add(key)
                self._warm_counts["scheduled"] += 1
            self._warmup.submit(self._warm, key)

    def _warm(self, key: Tuple[str, object]) -> None:
        url, task_id = key
        try:
            self.prepared(url, task_id, self.predictor(None))
            outcome = "done"
        except BackendError as exc:
            log.warning("warm-up of %s failed: %s", url, exc.message)
            outcome = "failed"
        except Exception:
            log.exception("warm-up of %s failed", url)
            outcome = "failed"
        with self._warm_lock:
            self._warm_pending.discard(key)
            self._warm_counts[outcome] += 1

    def stats(self) -> Dict[str, Any]:
        with self._warm_lock:
            warmup = {**self._warm_counts, "pending": len(self._warm_pending)}
        return {"model": self.status(), "model_version": self.model_version, "cache": self.cache.stats(),
                "warmup": warmup, "out_of_memory": self._oom_count, "stages": self.stages.snapshot()}


def _task_url(task: Dict[str, Any], target: ImageTarget) -> str:
    data = task.get("data")
    if not isinstance(data, dict):
        raise TaskError(f"task {task.get('id')!r} has no data object")
    if target.data_key not in data:
        raise TaskError(f"task {task.get('id')!r} has no data field {target.data_key!r} for Image "
                        f"{target.name!r} (fields: {sorted(map(str, data))})")
    return data[target.data_key]


def _output_size(original: Optional[Tuple[int, int]], prepared: PreparedImage, url: str) -> Tuple[int, int]:
    """The mask size Label Studio expects: the browser's ``original_width × original_height`` when given.

    Click percentages are applied to the decoded image; when the browser reports another size of the same aspect
    ratio (within 2 %), the mask is resampled to the browser's size. Differing aspect ratios (e.g. EXIF orientation
    handled differently) are an error, because the clicks cannot be placed reliably.
    """
    real = (prepared.width, prepared.height)
    if original is None or original == real:
        return real
    w, h = original
    if abs((w / h) / (real[0] / real[1]) - 1.0) > ASPECT_TOLERANCE:
        raise ContextError(f"the clicks were made on a {w}×{h} image, but {url} decodes to {real[0]}×{real[1]} "
                           "(after EXIF orientation): the aspect ratios differ, so the clicks cannot be placed",
                           url=url)
    log.info("%s: browser size %dx%d differs from decoded %dx%d; resampling the mask", url, w, h, *real)
    return original
