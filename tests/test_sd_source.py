"""The Stable Diffusion attention source on a tiny SD2-shaped pipeline with random weights (offline, CPU)."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from m2n2_core.attention import make_source
from m2n2_core.attention.sd import CapturingProcessor, ModelLoadError, StableDiffusionAttention, empty_prompt_ids
from m2n2_core.attention.sd_loading import hub_files_to_fetch
from m2n2_core.config import DEFAULT_LAYERS, M2N2Config
from tests.sd_fixtures import make_tiny_sd2

R = 8
LAYER_0, LAYER_1 = (name for name, _ in DEFAULT_LAYERS)
LAYER_2 = "up_blocks.3.attentions.2.transformer_blocks.0.attn1"


@pytest.fixture(scope="module", autouse=True)
def network_attempts():
    """Block every outgoing connection while this module runs; yields the list of attempted connections."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args and isinstance(args[0], socket.socket) else args)
        raise OSError("network disabled by test_sd_source")

    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", refuse)
    patch.setattr(socket, "create_connection", refuse)
    patch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    patch.undo()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, network_attempts):
    return make_tiny_sd2(tmp_path_factory.mktemp("tiny_sd2"), r=R)


@pytest.fixture(scope="module")
def source(model_dir):
    return StableDiffusionAttention(M2N2Config(model=str(model_dir), attention_resolution=R), "cpu")


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return (rng.random((37, 53, 3)) * 255).astype(np.uint8)


@pytest.fixture()
def offline_hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache, and HF_HUB_OFFLINE as huggingface_hub reads it (at import time)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def reference_attention(inputs: dict, layers) -> torch.Tensor:
    """Explicit float64 softmax(QKᵀ/√d) of each layer from its recorded input, head/batch mean, weighted, rownorm."""
    total = 0
    for module, weight in layers:
        h = inputs[module].double()
        q = torch.nn.functional.linear(h, module.to_q.weight.double())
        k = torch.nn.functional.linear(h, module.to_k.weight.double())
        b, n, c = q.shape
        d = c // module.heads
        q = q.view(b, n, module.heads, d).transpose(1, 2)
        k = k.view(b, n, module.heads, d).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=-1)
        total = total + weight * probs.mean(dim=(0, 1))
    return total / total.sum(dim=1, keepdim=True)


def record_inputs(unet, names):
    """Forward pre-hooks storing each named attention module's input hidden states; returns (inputs, handles)."""
    inputs = {}

    def hook(module, args, kwargs):
        inputs[module] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    handles = [unet.get_submodule(n).register_forward_pre_hook(hook, with_kwargs=True) for n in names]
    return inputs, handles


def test_fixture_is_a_real_diffusers_pipeline_and_prompt_matches_it(model_dir, source):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None)
    reference, _ = pipe.encode_prompt("", "cpu", 1, False)
    assert source.prompt_embedding.shape == (1, 77, 32)
    torch.testing.assert_close(source.prompt_embedding, reference)
    assert tuple(pipe.unet.config.attention_head_dim) == (5, 10, 20, 20)
    assert pipe.unet.get_submodule(LAYER_0).heads == 5
    assert pipe.vae_scale_factor == 8


def test_only_configured_layers_capture(source):
    from diffusers.models.attention_processor import AttnProcessor2_0
    assert source.captured_layers == (LAYER_0, LAYER_1)
    processors = source.unet.attn_processors
    capturing = {k.removesuffix(".processor") for k, p in processors.items() if isinstance(p, CapturingProcessor)}
    assert capturing == {LAYER_0, LAYER_1}
    others = [p for k, p in processors.items() if k.removesuffix(".processor") not in capturing]
    assert len(others) == len(processors) - 2 and all(type(p) is AttnProcessor2_0 for p in others)


def test_compute_returns_row_stochastic_float32(source, image):
    attention = source.compute(image)
    assert attention.shape == (R * R, R * R)
    assert attention.dtype == torch.float32 and attention.device.type == "cpu"
    assert torch.all(attention >= 0)
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(R * R), atol=1e-5, rtol=0)
    attention.mul_(1.0)  # a normal tensor, not an inference tensor: callers may work on it in place


def test_capture_equals_naive_reference(source, image):
    unet = source.unet
    inputs, handles = record_inputs(unet, [LAYER_0, LAYER_1])
    try:
        attention = source.compute(image)
    finally:
        for h in handles:
            h.remove()
    expected = reference_attention(inputs, [(unet.get_submodule(LAYER_0), 0.5), (unet.get_submodule(LAYER_1), 0.5)])
    torch.testing.assert_close(attention.double(), expected, atol=2e-6, rtol=1e-4)


def test_concurrent_computes_are_serialised(source, image):
    from concurrent.futures import ThreadPoolExecutor
    images = [image, image[::-1].copy(), image[:, ::-1].copy()]
    expected = [source.compute(im) for im in images]
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(source.compute, images))
    for got, want in zip(results, expected):
        torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_layer_weights_and_no_early_stop(model_dir, image):
    layers = ((LAYER_0, 0.25), (LAYER_1, 0.0), (LAYER_2, 0.75))
    config = M2N2Config(model=str(model_dir), attention_resolution=R, layers=layers)
    full_pass = StableDiffusionAttention(config, "cpu", stop_early=False)
    assert full_pass.captured_layers == (LAYER_0, LAYER_2)  # weight 0 → not captured at all
    inputs, handles = record_inputs(full_pass.unet, [LAYER_0, LAYER_2])
    attention = full_pass.compute(image)
    for h in handles:
        h.remove()
    unet = full_pass.unet
    expected = reference_attention(inputs, [(unet.get_submodule(LAYER_0), 0.25), (unet.get_submodule(LAYER_2), 0.75)])
    torch.testing.assert_close(attention.double(), expected, atol=2e-6, rtol=1e-4)
    full_pass.stop_early = True
    torch.testing.assert_close(full_pass.compute(image), attention)


def test_unet_output_unchanged_by_capture(model_dir, image):
    from diffusers import UNet2DConditionModel
    source = StableDiffusionAttention(M2N2Config(model=str(model_dir), attention_resolution=R), "cpu",
                                      stop_early=False)
    outputs = []
    handle = source.unet.register_forward_hook(lambda module, args, output: outputs.append(output.sample.clone()))
    latent = source.encode(image)
    source.attention_from_latent(latent)
    handle.remove()
    plain = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet").eval()
    with torch.inference_mode():
        expected = plain(latent, torch.tensor([100]), encoder_hidden_states=source.prompt_embedding).sample
    assert len(outputs) == 1
    torch.testing.assert_close(outputs[0], expected, atol=0, rtol=0)


def test_tokenizer_free_embedding_equals_tokenizer_embedding(tmp_path, source):
    no_tokenizer = make_tiny_sd2(tmp_path / "sd", r=R, tokenizer=False)
    assert not (no_tokenizer / "tokenizer").exists()
    other = StableDiffusionAttention(M2N2Config(model=str(no_tokenizer), attention_resolution=R), "cpu")
    from transformers import CLIPTokenizer
    tokenizer = CLIPTokenizer.from_pretrained(source.config.model, subfolder="tokenizer")
    assert empty_prompt_ids(77).tolist() == empty_prompt_ids(77, tokenizer).tolist()
    torch.testing.assert_close(other.prompt_embedding, source.prompt_embedding, atol=0, rtol=0)


def test_resolution_is_configurable(model_dir, image):
    source = make_source(M2N2Config(model=str(model_dir), attention_resolution=2 * R), "cpu")
    assert source.name == "sd" and source.description == str(model_dir)
    attention = source.compute(image)
    assert attention.shape == (4 * R * R, 4 * R * R) and attention.dtype == torch.float32
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(4 * R * R), atol=1e-5, rtol=0)


def test_dtype_is_configurable(model_dir, image):
    source = StableDiffusionAttention(M2N2Config(model=str(model_dir), attention_resolution=R, dtype="bfloat16"), "cpu")
    assert source.dtype == torch.bfloat16 and next(source.unet.parameters()).dtype == torch.bfloat16
    assert source.prompt_embedding.dtype == torch.bfloat16
    attention = source.compute(image)
    assert attention.dtype == torch.float32
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(R * R), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        StableDiffusionAttention(M2N2Config(model=str(model_dir), dtype="int8"), "cpu")


def test_local_directory_loads_without_network(model_dir, network_attempts, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # even when allowed, a local directory needs no hub
    before = len(network_attempts)
    StableDiffusionAttention(M2N2Config(model=str(model_dir), attention_resolution=R), "cpu")
    assert len(network_attempts) == before


def test_offline_hub_id_gives_clear_error(offline_hub, network_attempts):
    before = len(network_attempts)
    with pytest.raises(ModelLoadError) as info:
        StableDiffusionAttention(M2N2Config(model="some-org/missing-sd2", attention_resolution=R), "cpu")
    message = str(info.value)
    for needle in ("some-org/missing-sd2", "HF_HUB_OFFLINE", "M2N2_MODEL", "--model", "huggingface-cli download",
                   "--attention affinity"):
        assert needle in message
    assert len(network_attempts) == before


def test_unreachable_hub_gives_clear_error(offline_hub, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(ModelLoadError, match="cannot be reached") as info:
        StableDiffusionAttention(M2N2Config(model="some-org/missing-sd2", attention_resolution=R), "cpu")
    assert "local diffusers directory" in str(info.value)


def test_online_hub_id_downloads_only_needed_files(offline_hub, model_dir, monkeypatch):
    """The online path with the hub replaced by fakes: list the repo, fetch one weight file per component, load."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.hf_api import RepoSibling
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    listing = [str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if p.is_file()]
    listing += ["unet/diffusion_pytorch_model.bin", "v2-1_768-ema-pruned.ckpt"]
    requested = []

    class FakeApi:
        def model_info(self, repo_id):
            assert repo_id == "some-org/tiny-sd2"
            return type("Info", (), {"siblings": [RepoSibling(rfilename=f) for f in listing]})()

    def fake_snapshot_download(repo_id, allow_patterns):
        requested.extend(allow_patterns)
        return str(model_dir)

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    source = StableDiffusionAttention(M2N2Config(model="some-org/tiny-sd2", attention_resolution=R), "cpu")
    assert source.description == "some-org/tiny-sd2"
    assert "unet/diffusion_pytorch_model.safetensors" in requested and "model_index.json" in requested
    assert not any(f.endswith((".bin", ".ckpt")) or f.startswith("scheduler/") for f in requested)


def test_cached_hub_snapshot_loads_offline(offline_hub, model_dir):
    repo = offline_hub / "models--some-org--tiny-sd2"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots").mkdir()
    (repo / "snapshots" / commit).symlink_to(model_dir, target_is_directory=True)
    source = StableDiffusionAttention(M2N2Config(model="some-org/tiny-sd2", attention_resolution=R), "cpu")
    assert source.description == "some-org/tiny-sd2" and source.captured_layers == (LAYER_0, LAYER_1)


def _partial_copy(model_dir, target, skip):
    target.mkdir()
    for item in model_dir.iterdir():
        if item.name != skip:
            (target / item.name).symlink_to(item)
    return target


def test_missing_component_names_it(model_dir, tmp_path):
    broken = _partial_copy(model_dir, tmp_path / "no_unet", skip="unet")
    with pytest.raises(ModelLoadError, match="missing the unet component") as info:
        StableDiffusionAttention(M2N2Config(model=str(broken)), "cpu")
    assert str(broken) in str(info.value)


def test_corrupt_weights_name_the_file(model_dir, tmp_path):
    broken = _partial_copy(model_dir, tmp_path / "bad_unet", skip="unet")
    (broken / "unet").mkdir()
    (broken / "unet" / "config.json").write_text((model_dir / "unet" / "config.json").read_text())
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(ModelLoadError, match="could not load the unet from .*diffusion_pytorch_model.safetensors"):
        StableDiffusionAttention(M2N2Config(model=str(broken)), "cpu")


def test_missing_directory_is_not_sent_to_the_hub(tmp_path, network_attempts):
    before = len(network_attempts)
    with pytest.raises(ModelLoadError, match="does not exist"):
        StableDiffusionAttention(M2N2Config(model=str(tmp_path / "no" / "such" / "dir")), "cpu")
    assert len(network_attempts) == before


def test_file_instead_of_directory(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        StableDiffusionAttention(M2N2Config(model=str(path)), "cpu")


@pytest.mark.parametrize("layers, message", [
    (((LAYER_0.replace("attn1", "attnX"), 1.0),), "unknown attention layer"),
    ((("down_blocks.1.attentions.0.transformer_blocks.0.attn1", 1.0),), "below the latent resolution"),
    (((LAYER_0, -1.0), (LAYER_1, 1.0)), "non-negative"),
    (((LAYER_0, 0.0),), "at least one positive"),
    (((LAYER_0, 0.5), (LAYER_0, 0.5)), "listed twice"),
])
def test_bad_layer_configuration(model_dir, layers, message):
    with pytest.raises(ValueError, match=message) as info:
        StableDiffusionAttention(M2N2Config(model=str(model_dir), attention_resolution=R, layers=layers), "cpu")
    if message == "unknown attention layer":
        assert LAYER_0 in str(info.value)


@pytest.mark.parametrize("bad", [np.zeros((8, 8), np.uint8), np.zeros((8, 8, 3), np.float32),
                                 np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8, 3), np.uint8)])
def test_bad_image_is_rejected(source, bad):
    with pytest.raises(ValueError, match="image"):
        source.compute(bad)


def test_hub_download_fetches_one_weight_file_per_component():
    listing = ["model_index.json", "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json",
               "768-v-ema.ckpt", "feature_extractor/preprocessor_config.json"]
    for component, stem in (("vae", "diffusion_pytorch_model"), ("unet", "diffusion_pytorch_model"),
                            ("text_encoder", "model")):
        listing += [f"{component}/config.json", f"{component}/{stem}.safetensors",
                    f"{component}/{stem}.fp16.safetensors"]
    listing += ["unet/diffusion_pytorch_model.bin", "text_encoder/pytorch_model.bin"]
    fp16 = hub_files_to_fetch(listing, True, "org/sd")
    fp32 = hub_files_to_fetch(listing, False, "org/sd")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in fp16 and "text_encoder/model.fp16.safetensors" in fp16
    assert "unet/diffusion_pytorch_model.safetensors" in fp32 and "vae/diffusion_pytorch_model.safetensors" in fp32
    for files in (fp16, fp32):
        assert len([f for f in files if "safetensors" in f or f.endswith((".bin", ".ckpt"))]) == 3
        assert "model_index.json" in files and "tokenizer/vocab.json" in files
    with pytest.raises(ModelLoadError, match="no supported unet weights"):
        hub_files_to_fetch([f for f in listing if not f.startswith("unet/diffusion")], False, "org/sd")
