"""A tiny Stable-Diffusion-2-shaped pipeline directory with random weights, built offline from diffusers configs.

Same layout, block types and layer names as SD2 (so ``up_blocks.3.attentions.{0,1}.transformer_blocks.0.attn1``
exist, with 5 heads there as in SD2), a VAE with 4 latent channels and downsampling factor 8, and a CLIP text
encoder with CLIP's vocabulary size and 77 positions; only the widths are tiny. Weights are random: outputs mean
nothing, they only exercise the code paths.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

TEXT_HIDDEN = 32  #: tiny text encoder width = UNet cross_attention_dim

#: Tokens the tiny tokenizer knows: CLIP's real ids for "!" (SD2's pad), BOS and EOS, plus a few letters.
TOKENIZER_VOCAB = {"!": 0, "a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5,
                   "<|startoftext|>": 49406, "<|endoftext|>": 49407}


def tiny_sd2_components(r: int = 8, seed: int = 0):
    """(vae, text_encoder, unet) with SD2's architecture shape and tiny widths, random weights from ``seed``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=r, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(40, 40, 80, 80), norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=[5, 10, 20, 20],  # SD2's per-level head counts (head width 8, 4, 4, 4 here; 64 in SD2)
        cross_attention_dim=TEXT_HIDDEN, use_linear_projection=True, upcast_attention=True,
        act_fn="silu", flip_sin_to_cos=True, freq_shift=0, norm_eps=1e-5)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=4,
        block_out_channels=(8, 8, 16, 16), sample_size=8 * r, scaling_factor=0.18215,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, max_position_embeddings=77, hidden_size=TEXT_HIDDEN, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=2, projection_dim=TEXT_HIDDEN, hidden_act="gelu"))
    return vae.eval(), text_encoder.eval(), unet.eval()


def _save_tokenizer(folder: Path) -> None:
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(TOKENIZER_VOCAB))
    (folder / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!",
                              model_max_length=77)
    tokenizer.save_pretrained(folder)


def make_tiny_sd2(directory: Path, r: int = 8, tokenizer: bool = True, seed: int = 0) -> Path:
    """Write a tiny SD2-shaped diffusers pipeline (model_index.json, vae/, text_encoder/, unet/, scheduler/ and,
    if ``tokenizer``, a CLIP tokenizer padding with "!" like SD2's) into ``directory``; return ``directory``.
    Offline, a few seconds. ``r`` is the UNet's sample size (latent side); the VAE's is 8r."""
    from diffusers import DDIMScheduler

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vae, text_encoder, unet = tiny_sd2_components(r, seed)
    vae.save_pretrained(directory / "vae")
    text_encoder.save_pretrained(directory / "text_encoder")
    unet.save_pretrained(directory / "unet")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                  set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction").save_pretrained(directory / "scheduler")
    if tokenizer:
        _save_tokenizer(directory / "tokenizer")
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
             "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"] if tokenizer else [None, None],
             "unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "DDIMScheduler"],
             "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}
    (directory / "model_index.json").write_text(json.dumps(index, indent=2))
    return directory
