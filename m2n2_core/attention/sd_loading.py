"""Find and load the Stable Diffusion components M2N2 needs (VAE, text encoder, UNet, optional tokenizer).

``config.model`` is either a local diffusers pipeline directory (``vae/``, ``text_encoder/``, ``unet/``, optional
``tokenizer/``) or a Hugging Face hub id. A hub id is downloaded into the hub cache (``HF_HOME``) with a progress
bar, fetching only the files needed (one weight file per component, the fp16 variant when loading in fp16);
offline (no network, or ``HF_HUB_OFFLINE=1``) a previously cached copy is used. Every failure becomes a
:class:`ModelLoadError` whose message names the model/path and says what to do.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

#: The pipeline sub-folders M2N2 loads.
COMPONENTS = ("vae", "text_encoder", "unet")

#: Each component's weight files as (stem, extension), preferred first.
_WEIGHT_FILES = {"vae": (("diffusion_pytorch_model", "safetensors"), ("diffusion_pytorch_model", "bin")),
                 "unet": (("diffusion_pytorch_model", "safetensors"), ("diffusion_pytorch_model", "bin")),
                 "text_encoder": (("model", "safetensors"), ("pytorch_model", "bin"))}

_WHAT_TO_DO = ("set M2N2_MODEL (or --model) to a local diffusers directory with vae/, text_encoder/ and unet/; "
               "or pre-download it on a machine with internet access with `hf download {model}` "
               "(`huggingface-cli download {model}` in older huggingface_hub; the cache lives under HF_HOME); "
               "or use `--attention affinity` for the weight-free attention source")


class ModelLoadError(RuntimeError):
    """The Stable Diffusion model could not be found, downloaded or loaded; the message says what to do."""


@dataclass
class SDComponents:
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    unet: torch.nn.Module
    tokenizer: Optional[object]  #: a CLIPTokenizer when the directory has tokenizer/, else None
    root: Path


def weight_candidates(component: str, fp16: bool) -> list[tuple[str, Optional[str]]]:
    """(file name, variant) of ``component``'s weights, most preferred first: safetensors before .bin, and within
    each the fp16 variant first when loading in fp16, else last."""
    variants = ("fp16", None) if fp16 else (None, "fp16")
    return [(f"{stem}.{v}.{ext}" if v else f"{stem}.{ext}", v)
            for stem, ext in _WEIGHT_FILES[component] for v in variants]


def _choose_weight(component: str, present: Sequence[str], fp16: bool) -> tuple[str, Optional[str]]:
    for name, variant in weight_candidates(component, fp16):
        if name in present:
            return name, variant
    raise FileNotFoundError(f"no {component} weight file among {sorted(present)}")


def hub_files_to_fetch(repo_files: Sequence[str], fp16: bool, model: str) -> list[str]:
    """The repo files M2N2 needs: model_index.json, each component's config and ONE weight file, tokenizer/."""
    wanted = [f for f in repo_files if f == "model_index.json" or f.startswith("tokenizer/")]
    for component in COMPONENTS:
        inside = [f[len(component) + 1:] for f in repo_files if f.startswith(component + "/")]
        if "config.json" not in inside:
            raise ModelLoadError(f"hub repo {model!r} has no {component}/config.json: it is not a Stable Diffusion "
                                 f"pipeline in diffusers layout")
        try:
            name, _ = _choose_weight(component, inside, fp16)
        except FileNotFoundError:
            raise ModelLoadError(f"hub repo {model!r} has no supported {component} weights (expected one of "
                                 f"{[n for n, _ in weight_candidates(component, fp16)]}; found {sorted(inside)})")
        wanted += [f"{component}/config.json", f"{component}/{name}"]
    return wanted


def resolve_model_dir(model: str, fp16: bool) -> Path:
    """A local directory holding ``model``: the directory itself, or the hub cache snapshot (downloading the
    needed files first when the hub is reachable). Raises :class:`ModelLoadError` with advice otherwise."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"model {model!r} is a file, not a diffusers pipeline directory")
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or "\\" in model:  # a path, not owner/name
        raise ModelLoadError(f"model directory {str(path)!r} does not exist; set M2N2_MODEL (or --model) to a local "
                             f"diffusers directory with vae/, text_encoder/ and unet/, or to a Hugging Face hub id")

    from huggingface_hub import HfApi, constants, snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    advice = _WHAT_TO_DO.format(model=model)

    def cached_or_fail(reason: str) -> Path:
        try:
            cached = try_to_load_from_cache(model, "model_index.json")
        except HFValidationError:
            cached = None
        if isinstance(cached, str):
            return Path(cached).parent
        raise ModelLoadError(f"cannot load Stable Diffusion model {model!r}: it is not a local directory, {reason}, "
                             f"and it is not in the Hugging Face cache ({constants.HF_HUB_CACHE}). To fix: {advice}.")

    if constants.HF_HUB_OFFLINE:
        return cached_or_fail("HF_HUB_OFFLINE is set")
    try:
        repo_files = [sibling.rfilename for sibling in HfApi().model_info(model).siblings]
    except HFValidationError:
        raise ModelLoadError(f"model {model!r} is neither an existing local directory nor a valid Hugging Face hub "
                             f"id (owner/name). To fix: {advice}.") from None
    except GatedRepoError:
        raise ModelLoadError(f"hub repo {model!r} is gated: accept its licence on huggingface.co and log in "
                             f"(`hf auth login` or HF_TOKEN), or {advice}.") from None
    except RepositoryNotFoundError:
        raise ModelLoadError(f"hub repo {model!r} does not exist (or is private: log in with `hf auth login` or "
                             f"HF_TOKEN). To fix: {advice}.") from None
    except Exception as exc:  # no connection, DNS failure, timeout, proxy, hub down: maybe it is cached
        return cached_or_fail(f"the Hugging Face hub cannot be reached ({type(exc).__name__}: {exc})")
    files = hub_files_to_fetch(repo_files, fp16, model)
    try:
        return Path(snapshot_download(model, allow_patterns=files))
    except OSError as exc:
        raise ModelLoadError(f"downloading {model!r} failed ({type(exc).__name__}: {exc}). To fix: {advice}.") from exc


def _load_component(root: Path, component: str, dtype: torch.dtype) -> torch.nn.Module:
    folder = root / component
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{root} is missing the {component} component ({folder / 'config.json'} not found); "
                             f"a Stable Diffusion directory needs vae/, text_encoder/ and unet/ in diffusers layout")
    present = [p.name for p in folder.iterdir()]
    try:
        name, variant = _choose_weight(component, present, dtype == torch.float16)
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} has no supported weight file (expected one of "
                             f"{[n for n, _ in weight_candidates(component, False)]}; found {sorted(present)})") from None
    if component == "text_encoder":
        from transformers import CLIPTextModel as cls
    elif component == "vae":
        from diffusers import AutoencoderKL as cls
    else:
        from diffusers import UNet2DConditionModel as cls
    try:
        model, info = cls.from_pretrained(root, subfolder=component, torch_dtype=dtype, variant=variant,
                                          use_safetensors=name.endswith(".safetensors"), output_loading_info=True)
    except Exception as exc:  # corrupt/truncated weights, config/weights mismatch, unreadable files
        raise ModelLoadError(f"could not load the {component} from {folder / name}: {type(exc).__name__}: {exc}") from exc
    missing = list(info.get("missing_keys") or [])
    if missing:
        raise ModelLoadError(f"{folder / name} lacks {len(missing)} of the {component}'s weights "
                             f"(e.g. {missing[:3]}); the file does not match {folder / 'config.json'}")
    return model.eval().requires_grad_(False)


def load_components(root: Path, dtype: torch.dtype, device: str) -> SDComponents:
    """Load VAE, text encoder and UNet from the diffusers directory ``root`` in ``dtype`` onto ``device``; the
    tokenizer too when ``root/tokenizer`` exists. Raises :class:`ModelLoadError` naming the path on failure."""
    parts = {c: _load_component(root, c, dtype).to(device) for c in COMPONENTS}
    tokenizer = None
    if (root / "tokenizer").is_dir():
        from transformers import CLIPTokenizer
        try:
            tokenizer = CLIPTokenizer.from_pretrained(root / "tokenizer")
        except Exception as exc:
            raise ModelLoadError(f"could not load the tokenizer from {root / 'tokenizer'}: "
                                 f"{type(exc).__name__}: {exc}") from exc
    return SDComponents(parts["vae"], parts["text_encoder"], parts["unet"], tokenizer, root)
