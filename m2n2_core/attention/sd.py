"""Stable Diffusion self-attention as M2N2's transition matrix (spec §1).

One image → resize to (8r)×(8r) → VAE latent (distribution mode × scaling factor) → ONE UNet pass at
``config.timestep`` with the cached empty-prompt embedding → the configured ``attn1`` layers' softmax(QKᵀ/√d),
averaged over heads and batch, weighted over layers, row-normalised → float32 (r², r²).

Only the configured layers get a capturing attention processor; every other layer keeps diffusers' default fused
SDPA processor. The capturing processor returns exactly the default processor's output (the UNet is unchanged)
and accumulates the probabilities in fp32 head by head and in row chunks, so the extra memory beyond the (r², r²)
accumulator stays bounded (:data:`CHUNK_ELEMENTS`). By default the UNet pass stops as soon as every captured layer
has run, since its output is never used.
"""
from __future__ import annotations

import threading
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from ..config import M2N2Config
from .sd_loading import ModelLoadError, SDComponents, load_components, resolve_model_dir

__all__ = ["StableDiffusionAttention", "ModelLoadError", "empty_prompt_ids", "CHUNK_ELEMENTS"]

#: Largest fp32 score block (rows × keys) the capturing processor materialises at once (128 MiB).
CHUNK_ELEMENTS = 1 << 25

BOS_ID, EOS_ID = 49406, 49407  #: CLIP's <|startoftext|> and <|endoftext|>
SD2_PAD_ID = 0  #: SD2's (OpenCLIP) tokenizer pads with "!" = id 0, unlike SD1's CLIP tokenizer (pads with EOS)

_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}


def resolve_dtype(dtype: Optional[str], device: torch.device) -> torch.dtype:
    """``config.dtype`` as a torch dtype; None → float16 on CUDA, float32 elsewhere."""
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unsupported dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


def empty_prompt_ids(max_length: int, tokenizer=None) -> torch.Tensor:
    """(1, max_length) token ids of the empty prompt "": from ``tokenizer`` (padded to its max length, as diffusers'
    pipelines do) when given, else SD2's tokenization [BOS, EOS, 0, 0, ...] without needing tokenizer files."""
    if tokenizer is not None:
        length = min(int(tokenizer.model_max_length), max_length)
        return tokenizer("", padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
    return torch.tensor([[BOS_ID, EOS_ID] + [SD2_PAD_ID] * (max_length - 2)])


def empty_prompt_embedding(text_encoder: torch.nn.Module, tokenizer=None) -> torch.Tensor:
    """The text encoder's last hidden state for the empty prompt, (1, L, C): what the pipeline feeds the UNet."""
    device = next(text_encoder.parameters()).device
    ids = empty_prompt_ids(text_encoder.config.max_position_embeddings, tokenizer)
    with torch.inference_mode():
        return text_encoder(ids.to(device))[0].clone()


def attn1_layer_names(unet: torch.nn.Module) -> list[str]:
    """Names of every self-attention (``attn1``) module of the UNet, in module order."""
    from diffusers.models.attention_processor import Attention
    return [n for n, m in unet.named_modules() if isinstance(m, Attention) and n.endswith(".attn1")]


def _layer_downsampling(name: str, n_levels: int) -> int:
    """log2 of how much smaller than the latent the token grid of UNet layer ``name`` is."""
    block, index = name.split(".")[:2]
    if block == "down_blocks":
        return int(index)
    if block == "up_blocks":
        return n_levels - 1 - int(index)
    return n_levels - 1  # mid_block


class _AllCaptured(Exception):
    """Raised by the last capturing processor to end the UNet pass early."""


class _CaptureState:
    """Shared by one source's capturing processors: the accumulator of the pass in flight (None between passes)."""

    def __init__(self, layers: Sequence[str], stop_early: bool):
        self.layers = tuple(layers)
        self.stop_early = stop_early
        self.accumulator: Optional[torch.Tensor] = None
        self.ran: list[str] = []


class CapturingProcessor:
    """Attention processor for one ``attn1`` layer: returns the default processor's output unchanged and, while a
    capture is active, adds ``weight`` × mean over batch and heads of softmax(Q·Kᵀ·scale) to the fp32 accumulator."""

    def __init__(self, name: str, weight: float, state: _CaptureState, default):
        self.name, self.weight, self.state, self.default = name, weight, state, default

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        state = self.state
        if state.accumulator is not None:
            if encoder_hidden_states is not None or attention_mask is not None or hidden_states.ndim != 3:
                raise RuntimeError(f"{self.name}: capture supports unmasked self-attention on (B, N, C) tokens only")
            self._accumulate(attn, hidden_states, state.accumulator)
            state.ran.append(self.name)
            if state.stop_early and set(state.ran) >= set(state.layers):
                raise _AllCaptured
        return self.default(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

    def _accumulate(self, attn, hidden_states: torch.Tensor, accumulator: torch.Tensor) -> None:
        batch, n, _ = hidden_states.shape
        if accumulator.shape[0] != n:
            side = int(round(n ** 0.5))
            raise RuntimeError(f"{self.name} attends over {n} tokens ({side}×{side}) but the attention grid is "
                               f"{accumulator.shape[0]} cells: capture layers at the latent resolution")
        query, key = attn.to_q(hidden_states), attn.to_k(hidden_states)
        head_dim = query.shape[-1] // attn.heads
        alpha = self.weight / (batch * attn.heads)
        rows = max(1, CHUNK_ELEMENTS // n)
        for b in range(batch):
            for h in range(attn.heads):
                cols = slice(h * head_dim, (h + 1) * head_dim)
                q = query[b, :, cols].float() * attn.scale
                k_t = key[b, :, cols].float().t()
                for start in range(0, n, rows):
                    scores = torch.mm(q[start:start + rows], k_t)
                    accumulator[start:start + rows].add_(torch.softmax(scores, dim=-1), alpha=alpha)


class StableDiffusionAttention:
    """The paper's attention source (``config.attention == "sd"``): see the module docstring.

    Loading takes ``config.model`` (hub id or local diffusers directory; :class:`ModelLoadError` if unavailable);
    unknown or unusable ``config.layers`` raise ValueError. ``compute`` returns a float32 (r², r²) row-stochastic
    tensor on ``device``. Thread-safe: concurrent UNet passes are serialised.
    """

    name = "sd"

    def __init__(self, config: M2N2Config, device: Optional[str] = None, stop_early: bool = True):
        device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(config.dtype, device_)
        root = resolve_model_dir(config.model, fp16=dtype == torch.float16)
        self._setup(config, device_, dtype, load_components(root, dtype, str(device_)), stop_early)

    @classmethod
    def from_components(cls, config: M2N2Config, components: SDComponents, device: Optional[str] = None,
                        stop_early: bool = True) -> "StableDiffusionAttention":
        """A source around already-loaded components (moved to ``device`` and ``config.dtype``); for benchmarks."""
        source = cls.__new__(cls)
        device_ = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = resolve_dtype(config.dtype, device_)
        for part in (components.vae, components.text_encoder, components.unet):
            part.to(device=device_, dtype=dtype).eval().requires_grad_(False)
        source._setup(config, device_, dtype, components, stop_early)
        return source

    def _setup(self, config: M2N2Config, device: torch.device, dtype: torch.dtype, parts: SDComponents,
               stop_early: bool) -> None:
        self.config, self.device, self.dtype = config, device, dtype
        self.description = config.model
        self.resolution = config.attention_resolution
        self.vae, self.unet = parts.vae, parts.unet
        # The prompt never changes: encode it once; the text encoder is not kept.
        self.prompt_embedding = empty_prompt_embedding(parts.text_encoder, parts.tokenizer)
        layers = self._check_layers(config.layers)
        self._state = _CaptureState([n for n, _ in layers], stop_early)
        self._lock = threading.Lock()  # one capture in flight at a time: the processors share self._state
        self._install(layers)

    @property
    def stop_early(self) -> bool:
        """Whether the UNet pass ends right after the last captured layer (its output is never used)."""
        return self._state.stop_early

    @stop_early.setter
    def stop_early(self, value: bool) -> None:
        self._state.stop_early = bool(value)

    @property
    def captured_layers(self) -> tuple[str, ...]:
        """Names of the layers that carry a capturing processor (the configured layers with weight > 0)."""
        return self._state.layers

    def _check_layers(self, layers: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
        valid = attn1_layer_names(self.unet)
        names = [n for n, _ in layers]
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ValueError(f"unknown attention layer(s) {unknown}; valid attn1 layers of this UNet include "
                             f"{valid[-6:]} (all {len(valid)}: {valid})")
        if len(set(names)) != len(names):
            raise ValueError(f"attention layers listed twice: {names}")
        if any(w < 0 for _, w in layers) or not any(w > 0 for _, w in layers):
            raise ValueError(f"layer weights must be non-negative with at least one positive: {list(layers)}")
        n_levels = len(self.unet.config.block_out_channels)
        coarse = [n for n in names if _layer_downsampling(n, n_levels) != 0]
        if coarse:
            full = [n for n in valid if _layer_downsampling(n, n_levels) == 0]
            raise ValueError(f"layer(s) {coarse} work below the latent resolution; M2N2 needs r×r layers: {full}")
        return [(n, w) for n, w in layers if w > 0]

    def _install(self, layers: Sequence[tuple[str, float]]) -> None:
        for name, weight in layers:
            module = self.unet.get_submodule(name)
            if any(getattr(module, a, None) is not None for a in ("group_norm", "spatial_norm", "norm_q", "norm_k")):
                raise ValueError(f"layer {name} normalises inside attention; the capture does not support that")
            module.set_processor(CapturingProcessor(name, weight, self._state, module.get_processor()))

    def _check_image(self, image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image)
            raise ValueError(f"expected an H×W×3 uint8 RGB image, got {desc}")
        if min(image.shape[:2]) < 1:
            raise ValueError(f"image is empty: shape {image.shape}")

    def encode(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → (1, 4, r, r) latent: INTER_AREA resize to (8r)×(8r), [-1, 1], VAE mode × scaling."""
        self._check_image(image)
        side = 8 * self.resolution
        pixels = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
        x = torch.from_numpy(pixels).to(self.device).permute(2, 0, 1)[None]
        x = (x.to(self.dtype) / 127.5 - 1.0)
        with torch.inference_mode():
            latent = self.vae.encode(x).latent_dist.mode()
        return latent * self.vae.config.scaling_factor

    def attention_from_latent(self, latent: torch.Tensor) -> torch.Tensor:
        """One UNet pass on ``latent`` → float32 (r², r²) row-stochastic attention of the captured layers."""
        with self._lock:
            return self._capture(latent)

    def _capture(self, latent: torch.Tensor) -> torch.Tensor:
        n = latent.shape[-2] * latent.shape[-1]
        state = self._state
        state.accumulator = torch.zeros(n, n, dtype=torch.float32, device=self.device)
        state.ran = []
        timestep = torch.tensor([self.config.timestep], device=self.device)
        try:
            with torch.inference_mode():
                self.unet(latent, timestep, encoder_hidden_states=self.prompt_embedding)
        except _AllCaptured:
            pass
        finally:
            attention, state.accumulator = state.accumulator, None
        if sorted(state.ran) != sorted(state.layers):
            raise RuntimeError(f"captured layers {state.ran} differ from the configured {list(state.layers)}")
        return attention.div_(attention.sum(dim=1, keepdim=True))

    def compute(self, image: np.ndarray) -> torch.Tensor:
        """H×W×3 uint8 RGB → float32 (r², r²) attention, rows summing to 1, on this source's device."""
        return self.attention_from_latent(self.encode(image))
