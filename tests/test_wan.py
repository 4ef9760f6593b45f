"""diffusers Wan folders in kinema: random-weight folders written with diffusers' own classes
(``benchmarks/wan_folders.py``) load into kinema and give diffusers' frames for the same seed, steps and guidance."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.errors import KinemaError
from kinema.inference.pipeline import KinemaPipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import wan_folders

PROMPT = "a red ball is thrown to the right"


def uint8(frames: np.ndarray) -> np.ndarray:
    """diffusers' float frames in [0, 1] as kinema's uint8."""
    return (frames * 255.0).round().clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{kind: (folder, the diffusers pipeline that wrote it)}; the Wan2.1 transformer in shards with an index."""
    root = tmp_path_factory.mktemp("wan")
    made = {}
    for kind in ("wan2.1", "wan2.2-ti2v", "wan2.2-a14b", "wan2.1-i2v", "wan2.2-i2v-a14b"):
        shards = "60KB" if kind == "wan2.1" else None
        made[kind] = (root / kind, wan_folders.make_wan_folder(root / kind, kind, max_shard_size=shards))
    return made


def both(pipe: KinemaPipeline, reference, **call) -> tuple[np.ndarray, np.ndarray]:
    """kinema's and diffusers' frames (uint8) for the same call and seed."""
    ours = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    theirs = reference(PROMPT, negative_prompt=pipe.defaults.negative_prompt, output_type="np",
                       generator=torch.Generator().manual_seed(0), **call).frames
    return ours, uint8(theirs)


@pytest.mark.parametrize("kind, size", [("wan2.1", (32, 48)), ("wan2.2-ti2v", (32, 64)), ("wan2.2-a14b", (32, 48))])
def test_text_to_video_equals_wan_pipeline(folders, kind, size):
    folder, reference = folders[kind]
    pipe = KinemaPipeline.from_pretrained(folder)
    ours, theirs = both(pipe, reference, num_frames=9, height=size[0], width=size[1], num_inference_steps=2,
                        guidance_scale=5.0)
    assert ours.shape == theirs.shape == (1, 9, *size, 3)
    assert ours.std() > 5  # a picture, not a flat field
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_a14b_switches_to_the_low_noise_expert_at_the_boundary(folders):
    folder, reference = folders["wan2.2-a14b"]
    pipe = KinemaPipeline.from_pretrained(folder)
    assert pipe.boundary == 0.875 and pipe.transformer_2 is not None
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=4)
    ours = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames  # the model's guidance pair (4, 3)
    theirs = uint8(reference(PROMPT, negative_prompt=pipe.defaults.negative_prompt, guidance_scale=4.0,
                             guidance_scale_2=3.0, output_type="np", generator=torch.Generator().manual_seed(0),
                             **call).frames)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    used = []
    for name in ("transformer", "transformer_2"):
        getattr(pipe, name).register_forward_hook(lambda *_, name=name: used.append(name))
    pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call)
    # shift 12 puts 3 of the 4 steps above 0.875; each step is one batched (cond, uncond) pass
    assert used == ["transformer"] * 3 + ["transformer_2"]


def test_ti2v_image_to_video_equals_wan_image_to_video_pipeline(folders, monkeypatch):
    """Wan2.2 TI2V makes image to video as kinema makes every mode: the image's latent frame held clean at flow
    time 0 (diffusers' expand_timesteps)."""
    from types import SimpleNamespace

    from diffusers import WanImageToVideoPipeline
    from diffusers.pipelines.wan import pipeline_wan_i2v
    from PIL import Image

    # diffusers' I2V prompt cleaning calls ftfy even where it is not installed; kinema skips it there
    monkeypatch.setattr(pipeline_wan_i2v, "ftfy", SimpleNamespace(fix_text=lambda text: text), raising=False)

    folder, reference = folders["wan2.2-ti2v"]
    i2v = WanImageToVideoPipeline(tokenizer=reference.tokenizer, text_encoder=reference.text_encoder,
                                  vae=reference.vae, scheduler=reference.scheduler, transformer=reference.transformer,
                                  expand_timesteps=True)
    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    pipe = KinemaPipeline.from_pretrained(folder)
    call = dict(num_frames=9, height=32, width=64, num_inference_steps=2, guidance_scale=5.0)
    ours = pipe(PROMPT, image=image, generator=torch.Generator().manual_seed(0), **call).frames
    theirs = uint8(i2v(image=Image.fromarray(image), prompt=PROMPT, negative_prompt=pipe.defaults.negative_prompt,
                       output_type="np", generator=torch.Generator().manual_seed(0), **call).frames)
    assert np.abs(ours.astype(int) - theirs).max() <= 1


@pytest.mark.parametrize("kind", ["wan2.1-i2v", "wan2.2-i2v-a14b"])
def test_image_to_video_models_equal_wan_image_to_video_pipeline(folders, kind, monkeypatch):
    """Wan's image-to-video transformers (Wan2.1 I2V with its CLIP image tokens; Wan2.2's I2V A14B experts) take
    the known frames as input channels: kinema builds them as diffusers does and gives its frames."""
    from types import SimpleNamespace

    from diffusers.pipelines.wan import pipeline_wan_i2v
    from PIL import Image

    monkeypatch.setattr(pipeline_wan_i2v, "ftfy", SimpleNamespace(fix_text=lambda text: text), raising=False)
    folder, reference = folders[kind]
    pipe = KinemaPipeline.from_pretrained(folder)
    assert pipe.frames_as_channels and (pipe.image_encoder is not None) == (kind == "wan2.1-i2v")
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    call = dict(num_frames=9, height=32, width=48, num_inference_steps=3, guidance_scale=5.0)
    ours = pipe(PROMPT, image=image, generator=torch.Generator().manual_seed(0), **call).frames
    theirs = uint8(reference(image=Image.fromarray(image), prompt=PROMPT, negative_prompt=pipe.defaults.negative_prompt,
                             output_type="np", generator=torch.Generator().manual_seed(0), **call).frames)
    assert ours.std() > 5
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    # the same known-frames-as-channels input carries an extension; text alone is refused in one line
    video = pipe(PROMPT, num_frames=13, video=ours[0], mode="extend_forward", height=32, width=48,
                 num_inference_steps=2, generator=torch.Generator().manual_seed(0)).frames
    assert video.shape == (1, 13, 32, 48, 3)
    with pytest.raises(KinemaError, match="image-to-video model"):
        pipe(PROMPT, num_frames=5, height=32, width=48, num_inference_steps=1)


def test_real_wan21_width_with_one_block(tmp_path):
    """The transformer at Wan2.1-T2V-1.3B's real width (12 heads x 128, FFN 8960, UMT5's 4096-d text), one block:
    catches dimension mistakes the tiny configs cannot."""
    dims = {**wan_folders.WAN21_1_3B, "num_layers": 1}
    reference = wan_folders.make_wan_folder(tmp_path / "w", "wan2.1", dims=dims)
    pipe = KinemaPipeline.from_pretrained(tmp_path / "w")
    assert pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim == 1536
    ours, theirs = both(pipe, reference, num_frames=5, height=32, width=32, num_inference_steps=1, guidance_scale=5.0)
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_callback_on_step_end_replaces_latents_with_the_folders_scheduler(folders):
    """The scheduler sampler hands each step to ``callback_on_step_end`` as the other samplers do: diffusers'
    timestep of the flow time reached, and latents it returns replace the sampler's."""
    folder, _ = folders["wan2.1"]
    pipe = KinemaPipeline.from_pretrained(folder)
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=3, output_type="latent")
    seen = []

    def on_step_end(_pipe, step, timestep, tensors):
        seen.append((step, float(timestep)))
        return {"latents": torch.zeros_like(tensors["latents"])} if step in (0, 2) else {}

    latents = pipe(PROMPT, generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step_end, **call).frames
    reached = [1000.0 * float(sigma) for sigma in pipe.scheduler.sigmas[1:4]]  # the last is 0
    assert [step for step, _ in seen] == [0, 1, 2]
    assert [t for _, t in seen] == pytest.approx(reached, abs=1e-3) and reached[-1] == 0
    assert torch.count_nonzero(latents) == 0  # the last step's replacement is the output
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    kept = pipe(PROMPT, generator=torch.Generator().manual_seed(0), callback_on_step_end=lambda *_: {}, **call).frames
    assert torch.equal(kept, plain) and torch.count_nonzero(plain) > 0


def test_wan_defaults_come_from_the_folder(folders):
    pipe = KinemaPipeline.from_pretrained(folders["wan2.1"][0])
    assert (pipe.defaults.fps, pipe.defaults.shift, pipe.defaults.sampler) == (16.0, 3.0, "scheduler")
    assert not pipe.defaults.expand and pipe.defaults.negative_prompt.startswith("色调艳丽")
    ti2v = KinemaPipeline.from_pretrained(folders["wan2.2-ti2v"][0])
    assert (ti2v.defaults.fps, ti2v.defaults.shift, ti2v.vae.spatial_compression) == (24.0, 5.0, 16)
    a14b = KinemaPipeline.from_pretrained(folders["wan2.2-a14b"][0])
    assert (a14b.defaults.guidance_scale, a14b.defaults.guidance_scale_2) == (4.0, 3.0)
    with pytest.raises(KinemaError, match="multiples of 16"):
        ti2v(PROMPT, num_frames=5, height=40, width=32, num_inference_steps=1)


def test_weights_load_in_the_asked_dtype(folders):
    pipe = KinemaPipeline.from_pretrained(folders["wan2.1"][0], dtype=torch.bfloat16)
    assert pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.float32  # the VAE stays fp32
    assert all(p.device.type == "cpu" for p in pipe.transformer.parameters())


def test_the_text_encoder_is_freed_after_encoding_when_asked(folders):
    """`kinema generate` frees the UMT5 after encoding (sampling does not need it); it loads again for the next
    prompt, and the frames are the same. Offloaded, it goes to the execution device only to encode."""
    folder, _ = folders["wan2.1"]
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=1)
    pipe = KinemaPipeline.from_pretrained(folder)
    kept = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    assert pipe._text_encoder is not None
    pipe.release_text_encoder = True
    for _ in range(2):
        assert np.array_equal(pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames, kept)
        assert pipe._text_encoder is None

    # with CPU offload a server keeps it, in host memory, and moves it to the execution device only to encode
    offloaded = KinemaPipeline.from_pretrained(folder)
    offloaded.text_encoder_offload = True
    moves = []
    model = offloaded.text_encoder.model
    original_to = model.to
    model.to = lambda device, *args, **kwargs: moves.append(str(device)) or original_to(device, *args, **kwargs)
    assert np.array_equal(offloaded(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames, kept)
    assert moves == ["cpu", "cpu"] * 2  # (the execution device, back to the host) for the prompt and the negative

def test_a_gpu_too_small_is_told_before_loading_with_what_would_fit(folders, monkeypatch):
    """From the safetensors headers alone: the A14B pair in bf16 against a GPU's free memory (faked; no GPU here)."""
    from kinema.models import wan

    folder, reference = folders["wan2.2-a14b"]
    one = sum(p.numel() for p in reference.transformer.parameters()) * 2  # bytes of one expert in bf16
    assert wan.weights_bytes(folder / "transformer", torch.bfloat16) == one
    assert wan.weights_bytes(folder / "transformer_2", torch.float32) == 2 * one
    gpu = torch.device("cuda", 0)
    for free, hint in ((2 * one, None), (2 * one - 1, "--offload model"), (one - 1, "--offload sequential")):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 8 * one))
        if hint is None:
            wan.check_gpu_memory(folder, gpu, torch.bfloat16)  # both experts fit
        else:
            with pytest.raises(KinemaError, match=f"of bfloat16 weights on cuda:0.*use {hint}") as error:
                wan.check_gpu_memory(folder, gpu, torch.bfloat16)
            assert "\n" not in str(error.value) and "--dtype" not in str(error.value)
    with pytest.raises(KinemaError, match="or --dtype bfloat16"):
        wan.check_gpu_memory(folder, gpu, torch.float32)


@pytest.mark.parametrize("kind", ["wan2.1", "wan2.2-a14b"])
def test_model_cpu_offload_gives_the_same_frames(folders, kind):
    """Model CPU offload (here with the CPU as the execution device, the only one in the tests): each model, both
    A14B experts included, is moved to the execution device when its turn comes and back after, one at a time, and
    the frames are the same."""
    folder, _ = folders[kind]
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=4)  # A14B: 3 high-noise steps, 1 low
    plain = KinemaPipeline.from_pretrained(folder)(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    pipe = KinemaPipeline.from_pretrained(folder)
    pipe.enable_model_cpu_offload(device="cpu")
    names = ["transformer", "transformer_2", "vae"] if kind == "wan2.2-a14b" else ["transformer", "vae"]
    moves = []
    for name in names:
        module = getattr(pipe, name)
        module.to = lambda device, *a, _name=name, _to=module.to, **k: moves.append((_name, str(device))) or _to(
            device, *a, **k)
    ours = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    assert np.array_equal(ours, plain)
    # each model to the execution device and back before the next one goes there (the steps run high noise first)
    assert [name for name, _ in moves] == [name for name in names for _ in range(2)], moves
    assert [device for _, device in moves] == ["cpu"] * len(moves)


def test_bf16_weights_give_wan_pipelines_bf16_frames(folders):
    """In bf16 (the GPU default) kinema's frames stay within 2 levels of WanPipeline's in bf16 with its VAE in fp32
    (diffusers keeps a few small layers in fp32 that kinema runs in bf16; 1 level was seen)."""
    from diffusers import WanPipeline

    folder, _ = folders["wan2.1"]
    pipe = KinemaPipeline.from_pretrained(folder, dtype=torch.bfloat16)
    reference = WanPipeline.from_pretrained(folder, dtype=torch.bfloat16)
    reference.vae.to(torch.float32)
    ours, theirs = both(pipe, reference, num_frames=9, height=32, width=48, num_inference_steps=4,
                        guidance_scale=5.0)
    difference = np.abs(ours.astype(int) - theirs)
    assert difference.max() <= 2 and difference.mean() < 0.5


def test_broken_wan_folders_give_one_line_errors(folders, tmp_path):
    import shutil

    source = folders["wan2.1"][0]
    missing = tmp_path / "missing"
    shutil.copytree(source, missing)
    next((missing / "transformer").glob("*-00002-of-*.safetensors")).unlink()
    with pytest.raises(KinemaError, match=r"shard .* is missing"):
        KinemaPipeline.from_pretrained(missing)

    mismatch = tmp_path / "mismatch"
    shutil.copytree(source, mismatch)
    config = json.loads((mismatch / "transformer" / "config.json").read_text())
    (mismatch / "transformer" / "config.json").write_text(json.dumps({**config, "ffn_dim": 48}))
    with pytest.raises(KinemaError, match="shape mismatch"):
        KinemaPipeline.from_pretrained(mismatch)

    other = tmp_path / "other"
    shutil.copytree(source, other)
    (other / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(KinemaError, match="names 'StableDiffusionPipeline'"):
        KinemaPipeline.from_pretrained(other)

    truncated = tmp_path / "truncated"
    shutil.copytree(source, truncated)
    shard = next((truncated / "transformer").glob("*-00001-of-*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(KinemaError, match="truncated or corrupt"):
        KinemaPipeline.from_pretrained(truncated)


def peft_lora(reference, folder: Path, seed: int = 5) -> Path:
    """A LoRA made with peft on the diffusers transformer (random A and B) and written by diffusers'
    ``save_lora_weights``, with its adapter config (r 4, alpha 8: scale 2) in the metadata."""
    from diffusers import WanPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"])
    reference.transformer.add_adapter(config, adapter_name="test")
    state = get_peft_model_state_dict(reference.transformer, adapter_name="test")
    state = {key: value * 20 if "lora_B" in key else value for key, value in state.items()}  # a visible change
    reference.transformer.delete_adapters("test")
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=state,
                                  transformer_lora_adapter_metadata=config.to_dict())
    return folder / "pytorch_lora_weights.safetensors"


def test_a_peft_lora_gives_diffusers_frames(folders, tmp_path):
    from diffusers import WanPipeline

    folder, _ = folders["wan2.1"]
    reference = WanPipeline.from_pretrained(folder)
    lora = peft_lora(reference, tmp_path)
    reference.load_lora_weights(lora, adapter_name="test")
    reference.set_adapters(["test"], [0.7])
    pipe = KinemaPipeline.from_pretrained(folder)
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=5.0)
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    with pipe.loras([(str(lora), 0.7)]):
        ours, theirs = both(pipe, reference, **call)
    assert np.abs(ours.astype(int) - plain).max() > 10  # the LoRA changes the video
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    # taken off exactly: the weights were never changed
    assert np.array_equal(pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames, plain)


def test_a14b_loras_go_to_the_expert_diffusers_loads_them_into(folders, tmp_path):
    """Wan2.2 A14B: FILE goes to the high-noise expert as diffusers' load_lora_weights does, low=FILE to the
    low-noise one as with its load_into_transformer_2=True; either way kinema gives diffusers' frames."""
    from diffusers import WanPipeline

    from kinema.models.lora import parse_lora_spec

    folder, _ = folders["wan2.2-a14b"]
    pipe = KinemaPipeline.from_pretrained(folder)
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=4)
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    made = {}
    for spec in ("{}", "low={}:0.8"):
        reference = WanPipeline.from_pretrained(folder)
        lora = peft_lora(reference, tmp_path / str(len(made)))
        path, scale, expert = parse_lora_spec(spec.format(lora))
        reference.load_lora_weights(path, adapter_name="test", load_into_transformer_2=expert == "low")
        reference.set_adapters(["test"], [scale])
        with pipe.loras([(path, scale, expert)]):
            ours = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
        theirs = uint8(reference(PROMPT, negative_prompt=pipe.defaults.negative_prompt, guidance_scale=4.0,
                                 guidance_scale_2=3.0, output_type="np", generator=torch.Generator().manual_seed(0),
                                 **call).frames)
        assert np.abs(ours.astype(int) - plain).max() > 5  # the LoRA changes the video
        assert np.abs(ours.astype(int) - theirs).max() <= 1
        made[expert] = ours
    assert np.abs(made["high"].astype(int) - made["low"]).max() > 5  # each expert took its own


@pytest.mark.parametrize("layout", ["original", "musubi"])
def test_community_lora_formats_read_like_the_diffusers_one(folders, tmp_path, layout):
    """Original Wan names (diffusion_model.blocks.N.self_attn.q, ffn.0) and musubi-tuner's
    (lora_unet_blocks_N_self_attn_q.lora_down), each with .alpha, as diffusers converts them."""
    from safetensors.torch import load_file, save_file

    from kinema.models.lora import read_lora

    lora = peft_lora(folders["wan2.1"][1], tmp_path)
    ours = read_lora(lora)
    names = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
             "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
             "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o", "ffn.net.0.proj": "ffn.0",
             "ffn.net.2": "ffn.2"}
    community = {}
    for key, value in load_file(lora).items():
        key = key.removeprefix("transformer.")
        for new, old in names.items():
            key = key.replace(f".{new}.", f".{old}.")
        module, _, kind = key.partition(".lora_")  # blocks.0.self_attn.q, A.weight
        if layout == "original":
            module, kind = f"diffusion_model.{module}", f"lora_{kind}"
        else:
            module, kind = "lora_unet_" + module.replace(".", "_"), {"A.weight": "lora_down.weight",
                                                                     "B.weight": "lora_up.weight"}[kind]
        community[f"{module}.{kind}"] = value
        community[f"{module}.alpha"] = torch.tensor(8.0)  # alpha 8 at rank 4: the adapter config's scale 2
    save_file(community, tmp_path / "community.safetensors")
    theirs = read_lora(tmp_path / "community.safetensors")
    assert ours.keys() == theirs.keys() and len(ours) == 2 * 10
    for name, layer in ours.items():  # diffusers folds alpha / rank into the weights
        assert torch.allclose(layer.scale * layer.up @ layer.down, theirs[name].scale * theirs[name].up @
                              theirs[name].down, atol=1e-6)


def test_bad_loras_give_one_line_errors(folders, tmp_path):
    from kinema.models.lora import parse_lora_spec

    pipe = KinemaPipeline.from_pretrained(folders["wan2.1"][0])
    assert parse_lora_spec("style.safetensors:0.5") == ("style.safetensors", 0.5, "high")
    assert parse_lora_spec("c:/x/style.safetensors") == ("c:/x/style.safetensors", 1.0, "high")
    assert parse_lora_spec("low=a=b.safetensors:-2") == ("a=b.safetensors", -2.0, "low")
    with pytest.raises(KinemaError, match=r"only Wan2\.2 A14B has two"):
        pipe.load_lora_weights(tmp_path / "none.safetensors", load_into_transformer_2=True)
    with pytest.raises(KinemaError, match="does not exist"):
        pipe.load_lora_weights(tmp_path / "none.safetensors")
    with pytest.raises(KinemaError, match=r"only \.safetensors"):
        pipe.load_lora_weights(tmp_path / "x.bin")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(KinemaError, match="not a readable safetensors"):
        pipe.load_lora_weights(tmp_path / "bad.safetensors")
    from safetensors.torch import save_file

    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 7),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(96, 4)}, tmp_path / "wide.safetensors")
    with pytest.raises(KinemaError, match="do not fit"):
        pipe.load_lora_weights(tmp_path / "wide.safetensors")
    assert pipe._lora_hooks == []


def test_cli_generates_from_a_wan_folder_with_a_lora(folders, tmp_path):
    """`kinema generate --model WAN_FOLDER --lora FILE:SCALE`: the folder's defaults (fps 16, no world expansion,
    Wan's negative prompt), the LoRA applied, both in the provenance."""
    from kinema.cli import main
    from kinema.media import read_metadata, read_video

    folder, reference = folders["wan2.1"]
    lora = peft_lora(reference, tmp_path)
    out = tmp_path / "wan.mp4"
    main(["generate", PROMPT, "--model", str(folder), "--size", "32x32", "--seconds", "0.25", "--steps", "2",
          "--lora", f"{lora}:0.5", "-o", str(out)])
    frames, fps = read_video(out)
    meta = read_metadata(out)
    assert frames.shape == (5, 32, 32, 3) and fps == 16
    assert meta["loras"] == [f"{lora}:0.5"] and meta["expand"] is False and meta["expanded_prompt"] is None
    assert meta["sampler"] == "scheduler" and meta["model"].endswith("(wan2.1)")


@pytest.mark.parametrize("kind, size, fps, image", [("wan2.2-ti2v", "64x32", 24, False),
                                                    ("wan2.2-a14b", "32x32", 16, False),
                                                    ("wan2.1-i2v", "48x32", 16, True),
                                                    ("wan2.2-i2v-a14b", "48x32", 16, True)])
def test_cli_generates_from_each_kind_of_wan_folder(folders, tmp_path, kind, size, fps, image):
    """`kinema generate --model WAN_FOLDER` for each kind (the image-to-video ones from --image): the model's fps,
    the asked size and 1 + 4k frames."""
    from PIL import Image

    from kinema.cli import main
    from kinema.media import read_metadata, read_video

    out = tmp_path / "out.mp4"
    args = ["generate", PROMPT, "--model", str(folders[kind][0]), "--size", size, "--seconds", "0.25", "--steps",
            "2", "-o", str(out)]
    if image:
        width, height = map(int, size.split("x"))
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(tmp_path / "first.png")
        args += ["--image", str(tmp_path / "first.png")]
    main(args)
    frames, got_fps = read_video(out)
    width, height = map(int, size.split("x"))
    assert frames.shape[1:] == (height, width, 3) and (len(frames) - 1) % 4 == 0 and got_fps == fps
    assert read_metadata(out)["model"].endswith(f"({kind})")


def test_pipeline_modes_run_on_a_wan_model(folders):
    """Every mode is the known-frames mechanism, so it runs on Wan weights too: extend forward and backward, loop,
    connect, an image, edit, and a two-shot long video in windows (a storyboard: each shot's frames attend to its
    caption)."""
    from kinema.inference.longvideo import generate_long

    pipe = KinemaPipeline.from_pretrained(folders["wan2.1"][0])
    call = dict(height=32, width=32, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    first = pipe(PROMPT, num_frames=5, **call).frames[0]
    other = pipe("a blue box slides left", num_frames=5, **call).frames[0]

    def encoded(frames: np.ndarray) -> torch.Tensor:  # (1, C, 2, h, w): 5 frames' normalized latents
        return pipe.encode_video(torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 127.5 - 1)

    # the given frames are held as latents: exactly their encoding (a closing clip keeps all but its first, which
    # the causal VAE encodes as an image); random VAE weights do not reproduce pixels, so latents are compared
    forward = pipe(PROMPT, num_frames=9, video=first, mode="extend_forward", output_type="latent", **call).frames
    assert forward.shape[2] == 3 and torch.equal(forward[:, :, :2], encoded(first))
    backward = pipe(PROMPT, num_frames=9, video=first, mode="extend_backward", output_type="latent", **call).frames
    assert backward.shape[2] == 3 and torch.equal(backward[:, :, -1:], encoded(first)[:, :, 1:])
    connected = pipe(PROMPT, num_frames=17, video=first, video_end=other, mode="connect", output_type="latent",
                     **call).frames
    assert torch.equal(connected[:, :, :2], encoded(first))
    assert torch.equal(connected[:, :, -1:], encoded(other)[:, :, 1:])
    assert pipe(PROMPT, num_frames=9, video=first, mode="extend_backward", **call).frames.shape == (1, 9, 32, 32, 3)
    assert pipe(PROMPT, num_frames=8, mode="loop", **call).frames.shape == (1, 8, 32, 32, 3)
    assert pipe(PROMPT, num_frames=1, **call).frames.shape == (1, 1, 32, 32, 3)  # an image
    assert pipe(PROMPT, num_frames=5, video=first, mode="edit", strength=0.5, **call).frames.shape[1] == 5
    long = generate_long(pipe, [PROMPT, "a blue box slides left"], 45, 32, 32, shot_starts=[0, 21], window=6,
                         num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert long.shape == (45, 32, 32, 3)


def captioned_videos(data: Path) -> Path:
    """A folder of two 12-frame 32x32 videos (a random pattern moving right), each with a .txt caption."""
    from kinema.media import write_video

    data.mkdir()
    rng = np.random.default_rng(0)
    for n, caption in enumerate(["a red ball bounces on sand", "a blue box slides left on snow"]):
        base = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        frames = np.stack([np.roll(base, 2 * k, axis=1) for k in range(12)])
        write_video(data / f"clip{n}.mp4", frames, 16.0)
        (data / f"clip{n}.txt").write_text(caption)
    return data


def test_train_lora_on_a_video_folder_loads_in_diffusers(folders, tmp_path):
    """`kinema train lora` on a folder of videos with .txt captions writes a LoRA that diffusers'
    WanPipeline.load_lora_weights reads, giving kinema's frames with it."""
    from diffusers import WanPipeline

    from kinema.cli import main

    data = captioned_videos(tmp_path / "videos")
    folder, _ = folders["wan2.1"]
    out = tmp_path / "mine.safetensors"
    main(["train", "lora", "--model", str(folder), "--data", str(data), "-o", str(out), "--steps", "3", "--rank", "4",
          "--lr", "0.05", "--frames", "5", "--size", "32x32"])
    pipe = KinemaPipeline.from_pretrained(folder)
    reference = WanPipeline.from_pretrained(folder)
    reference.load_lora_weights(out, adapter_name="mine")
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=2, guidance_scale=5.0)
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    with pipe.loras([(str(out), 1.0)]):
        ours, theirs = both(pipe, reference, **call)
    assert np.abs(ours.astype(int) - plain).max() > 0  # the trained LoRA moved away from zero
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_a_lora_in_training_acts_with_its_current_weights_in_bf16(folders):
    """On a GPU the transformer is bf16 and the adapter trains in fp32: each forward must use the adapter's weights
    as they are now, not a bf16 copy made when the hooks were added."""
    from kinema.models.lora import LoraAdapter, apply_lora

    transformer = KinemaPipeline.from_pretrained(folders["wan2.1"][0], dtype=torch.bfloat16).transformer
    adapter = LoraAdapter(transformer, rank=4)
    hooks = apply_lora(transformer, adapter.layers())
    name = adapter.names[0]
    layer = transformer.get_submodule(name)
    x = torch.randn(2, layer.in_features, dtype=torch.bfloat16)
    before = layer(x)
    with torch.no_grad():
        adapter.up[name.replace(".", "__")].fill_(0.5)  # as an optimizer step would
    after = layer(x)
    assert after.dtype == torch.bfloat16 and not torch.equal(before, after)
    after.float().sum().backward()
    assert adapter.up[name.replace(".", "__")].grad is not None
    for hook in hooks:
        hook.remove()


def test_train_lora_for_the_a14b_low_noise_expert(folders, tmp_path, monkeypatch):
    """`kinema train lora --expert low` on Wan2.2 A14B trains transformer_2 at the flow times it denoises (below the
    boundary), and the LoRA loads in diffusers with load_into_transformer_2, giving kinema's frames with low=FILE."""
    from diffusers import WanPipeline

    from kinema.cli import main

    calls = []
    load = KinemaPipeline.from_pretrained.__func__

    def watched(cls, *args, **kwargs):  # the pipeline train lora loads, its transformers' inputs recorded
        pipe = load(cls, *args, **kwargs)
        for name in ("transformer", "transformer_2"):
            getattr(pipe, name).register_forward_pre_hook(lambda _, inputs, name=name: calls.append((name, inputs[1])))
        return pipe

    monkeypatch.setattr(KinemaPipeline, "from_pretrained", classmethod(watched))
    folder, _ = folders["wan2.2-a14b"]
    out = tmp_path / "low.safetensors"
    main(["train", "lora", "--model", str(folder), "--data", str(captioned_videos(tmp_path / "videos")), "-o",
          str(out), "--steps", "3", "--rank", "4", "--lr", "0.05", "--frames", "5", "--size", "32x32",
          "--expert", "low"])
    monkeypatch.undo()
    assert [name for name, _ in calls] == ["transformer_2"] * 3
    times = torch.cat([t.flatten() for _, t in calls])
    assert times.max() < 0.875 and times.max() > 0  # the low-noise expert's range (a known first frame is at 0)
    pipe = KinemaPipeline.from_pretrained(folder)
    reference = WanPipeline.from_pretrained(folder)
    reference.load_lora_weights(out, adapter_name="mine", load_into_transformer_2=True)
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=4)
    with pipe.loras([(str(out), 1.0, "low")]):
        ours = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    theirs = uint8(reference(PROMPT, negative_prompt=pipe.defaults.negative_prompt, guidance_scale=4.0,
                             guidance_scale_2=3.0, output_type="np", generator=torch.Generator().manual_seed(0),
                             **call).frames)
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    with pytest.raises(SystemExit) as exit_:  # a model with one transformer has no low-noise expert
        main(["train", "lora", "--model", str(folders["wan2.1"][0]), "--data", str(tmp_path / "videos"), "-o",
              str(tmp_path / "x.safetensors"), "--steps", "1", "--frames", "5", "--size", "32x32", "--expert", "low"])
    assert exit_.value.code == 2


def test_the_server_generates_from_a_wan_folder_with_a_lora_it_offers(folders, tmp_path):
    """`kinema serve --model WAN_FOLDER --lora-dir DIR`: a job names a LoRA of DIR (never a path of the server's
    machine), runs with the folder's defaults, and records both."""
    import shutil

    from test_serve import Server, wait_done

    folder, reference = folders["wan2.1"]
    loras = tmp_path / "loras"
    loras.mkdir()
    shutil.copy(peft_lora(reference, tmp_path), loras / "style.safetensors")
    server = Server(folder, tmp_path, "--lora-dir", str(loras)).start()
    try:
        with server.http() as http:
            health = http.get("/healthz").json()  # the studio offers the model's size, in its multiples
            assert (health["size"], health["size_multiple"]) == ("832x480", 16)
            body = {"prompt": PROMPT, "seconds": "0.25", "size": "32x32", "steps": 2, "seed": 3}
            for bad in ({"loras": ["../style.safetensors"]}, {"loras": ["other.safetensors"]}):
                answer = http.post("/v1/videos", json={**body, **bad})
                assert answer.status_code == 400 and "not a LoRA this server" in answer.json()["error"]["message"]
            answer = http.post("/v1/videos", json={**body, "loras": ["low=style.safetensors"]})  # one expert here
            assert answer.status_code == 400 and "only Wan2.2 A14B" in answer.json()["error"]["message"]
            answer = http.post("/v1/videos", json={**body, "expand_with": True})  # no --expand-with: no endpoint
            assert answer.status_code == 400 and "no chat endpoint" in answer.json()["error"]["message"]
            job = http.post("/v1/videos", json={**body, "loras": ["style.safetensors:0.5"]}).json()
            done = wait_done(http, [job["id"]])[job["id"]]
            assert done["status"] == "completed", done
            metadata = http.get(f"/v1/videos/{job['id']}/content", params={"variant": "metadata"}).json()
    finally:
        server.stop()
    assert metadata["loras"] == [f"{loras / 'style.safetensors'}:0.5"] and metadata["fps"] == 16
    assert metadata["expand"] is False and metadata["sampler"] == "scheduler"


def test_the_studio_offers_a_wan_model_its_own_size(folders, tmp_path):
    """The studio reads the model's size and size multiple from /healthz: a Wan2.1 model starts at 480 with
    sizes in multiples of 16, and a video made there plays."""
    from test_serve import Server, chromium_or_skip, studio

    chromium_or_skip()  # before the server starts
    server = Server(folders["wan2.1"][0], tmp_path).start()
    try:
        with studio(server) as (page, errors):
            page.wait_for_function("() => document.querySelector('#model').textContent.includes('wan2.1')")
            assert page.input_value("#resolution") == "480" and page.text_content("#size") == "480x480"
            page.click("#aspect button[data-aspect='16:9']")
            assert page.text_content("#size") == "848x480"  # 853 to the nearest multiple of 16
            page.select_option("#resolution", "64")
            page.click("#aspect button[data-aspect='4:3']")
            assert page.text_content("#size") == "80x64"
            page.fill("#prompt", PROMPT)
            page.click("#seconds-presets button[data-seconds='1']")
            page.click("#generate")
            page.wait_for_function("() => { const v = document.querySelector('#player');"
                                   " return v.readyState >= 2 && v.duration > 0; }", timeout=120_000)
            duration, width = page.evaluate("() => { const v = document.querySelector('#player');"
                                            " return [v.duration, v.videoWidth]; }")
            assert width == 80 and duration == pytest.approx(17 / 16, abs=0.1)
            assert errors == []
    finally:
        server.stop()


def test_the_server_makes_image_to_video_with_a_wan_i2v_folder(folders, tmp_path):
    """`kinema serve --model WAN_I2V_FOLDER`: the OpenAI client's input_reference makes the video from the image;
    text alone is refused (400, one line) before it is queued, as the model cannot make it."""
    import io

    from PIL import Image

    from test_serve import Server

    image = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), (40, 160, 220), np.uint8)).save(image, format="PNG")
    server = Server(folders["wan2.1-i2v"][0], tmp_path).start()
    try:
        client = server.client()
        video = client.videos.create_and_poll(prompt=PROMPT, seconds="0.25", size="48x32",
                                              input_reference=("first.png", image.getvalue(), "image/png"),
                                              extra_body={"steps": 2})
        assert video.status == "completed" and video.model_extra["kinema"]["mode"] == "i2v", video.error
        content = client.videos.download_content(video.id).content
        with server.http() as http:
            answer = http.post("/v1/videos", json={"prompt": PROMPT, "seconds": "0.25", "size": "48x32", "steps": 2})
            assert answer.status_code == 400 and "image-to-video model" in answer.json()["error"]["message"]
    finally:
        server.stop()
    (tmp_path / "v.mp4").write_bytes(content)
    from kinema.media import read_video

    frames, fps = read_video(tmp_path / "v.mp4")
    assert frames.shape == (5, 32, 48, 3) and fps == 16


def test_step_caching_covers_both_a14b_experts_the_scheduler_and_offload(folders):
    """First-Block Cache on Wan2.2 A14B with the folder's scheduler: each expert gets its own cache, fresh when its
    turn comes (the low-noise expert's first step runs every block, not the high-noise one's residual), the later
    steps of an expert skip the other blocks, the caches are off again after the call, and model CPU offload gives
    the same frames."""
    folder, _ = folders["wan2.2-a14b"]
    call = dict(num_frames=5, height=32, width=32, num_inference_steps=4)  # 3 high-noise steps, then 1 low
    pipe = KinemaPipeline.from_pretrained(folder)
    assert pipe.defaults.sampler == "scheduler"
    runs = {"transformer": [], "transformer_2": []}
    for name, record in runs.items():
        blocks = getattr(pipe, name).blocks
        blocks[-1].ffn.register_forward_hook(lambda *_, record=record: record.append("rest"))  # skipped: not run
        getattr(pipe, name).register_forward_hook(lambda *_, record=record: record.append("call"))
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).frames
    assert runs["transformer"].count("rest") == 3 and runs["transformer_2"].count("rest") == 1
    for record in runs.values():
        record.clear()
    cached = pipe(PROMPT, generator=torch.Generator().manual_seed(0), step_cache=1.0, **call).frames
    assert runs["transformer"].count("call") == 3 and runs["transformer"].count("rest") == 1  # steps 2, 3 reused
    assert runs["transformer_2"] == ["rest", "call"]  # a fresh cache: every block ran
    assert not pipe.transformer.is_cache_enabled and not pipe.transformer_2.is_cache_enabled
    assert not np.array_equal(cached, plain) and cached.std() > 5
    offloaded = KinemaPipeline.from_pretrained(folder)
    offloaded.enable_model_cpu_offload(device="cpu")
    assert np.array_equal(offloaded(PROMPT, generator=torch.Generator().manual_seed(0), step_cache=1.0,
                                    **call).frames, cached)
    assert np.array_equal(pipe(PROMPT, generator=torch.Generator().manual_seed(0), step_cache=0.0, **call).frames,
                          plain)
