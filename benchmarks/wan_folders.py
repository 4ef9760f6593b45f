"""Random-weight diffusers Wan folders, written with diffusers' and transformers' own classes and ``save_pretrained``
(nothing downloads): the tests' and the benchmarks' stand-ins for the folders users download.

    make_wan_folder(path, "wan2.1")   # WanPipeline: transformer, Wan2.1 VAE, UMT5, tokenizer, UniPC scheduler
    make_wan_folder(path, "wan2.2-ti2v")   # Wan2.2 TI2V-5B layout: 48-channel residual VAE, expand_timesteps
    make_wan_folder(path, "wan2.2-a14b")   # two experts (transformer, transformer_2) and a boundary_ratio
    make_wan_folder(path, "wan2.1-i2v")   # WanImageToVideoPipeline: CLIP image encoder, 36-channel transformer
    make_wan_folder(path, "wan2.2-i2v-a14b")   # WanImageToVideoPipeline: two 36-channel experts, no image encoder

``TINY`` holds the tiny dims; ``WAN21_1_3B`` the real Wan2.1-T2V-1.3B transformer dims (give ``num_layers``).
The tokenizer is a word-level ``tokenizers`` model over a small vocabulary, saved as ``tokenizer.json``, with
UMT5's pad (0), eos (1) and unk (2) ids and an eos after every prompt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Wide enough for a token's latent values (16 channels x 2 x 2 patch = 64; VideoDiT refuses narrower), small otherwise.
TINY = dict(num_attention_heads=2, attention_head_dim=48, ffn_dim=64, num_layers=2, text_dim=32, freq_dim=32)
TINY_TI2V = {**TINY, "num_attention_heads": 4}  # 48 channels x 2 x 2 = 192 values a token
WAN21_1_3B = dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096,
                  freq_dim=256)
WAN22_5B = dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30, text_dim=4096,
                freq_dim=256)
WORDS = ("a", "red", "ball", "is", "thrown", "to", "the", "right", "and", "bounces", "on", "sand", "blue",
         "box", "slides", "left", "snow", "cat", "walks", "beach", "green", "tree", "sky", "over", "under",
         "fast", "slow", "camera", "pans")
I2V_KINDS = ("wan2.1-i2v", "wan2.2-i2v-a14b")  # written as WanImageToVideoPipeline folders
SHIFTS = {"wan2.1": 3.0, "wan2.2-ti2v": 5.0, "wan2.2-a14b": 12.0}


def tokenizer(vocab_words: tuple[str, ...] = tuple(WORDS)):
    """A fast tokenizer with UMT5's special ids: <pad> 0, </s> 1, <unk> 2; every text ends with </s>."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(dict.fromkeys(vocab_words))}}
    model = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    model.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=model, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def text_encoder(d_model: int, vocab: int, seed: int = 2):
    """A small random UMT5 encoder whose states have ``d_model`` values (the transformer's text_dim)."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab, d_model=d_model, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
                        relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0,
                        eos_token_id=1, decoder_start_token_id=0)
    return UMT5EncoderModel(config).eval()


def transformer(dims: dict[str, Any], in_channels: int = 16, seed: int = 0, out_channels: int | None = None,
                **image: Any):
    """diffusers' WanTransformer3DModel with random weights of scale 0.05 (not its zero-ish init, so that every
    block changes the output); ``image``: image_dim and added_kv_proj_dim of an image-to-video model."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    model = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=in_channels,
                                  out_channels=out_channels or in_channels, cross_attn_norm=True,
                                  qk_norm="rms_norm_across_heads", eps=1e-6, **dims, **image)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.normal_(0.0, 0.05)
    return model.eval()


def vae(kind: str, seed: int = 1, real: bool = False):
    """diffusers' AutoencoderKLWan: the Wan2.1 layout (16 channels, 8x) or Wan2.2's (48 channels, residual,
    2x2 patches, 16x), small widths; ``real``: the released Wan2.1 VAE's dims."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    if real:
        model = AutoencoderKLWan()  # diffusers' defaults are the released Wan2.1 VAE's
    elif kind == "wan2.2-ti2v":
        model = AutoencoderKLWan(base_dim=8, decoder_base_dim=8, z_dim=48, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                                 out_channels=12, patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                                 latents_mean=[0.1 * (i % 5) for i in range(48)],
                                 latents_std=[1.0 + 0.1 * (i % 3) for i in range(48)])
    else:
        model = AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True])
    with torch.no_grad():  # weights of one scale, so that the decoded frames are not all one colour
        for tensor in model.parameters():
            if tensor.ndim > 1:
                tensor.normal_(0.0, 0.15)
    return model.eval()


def scheduler(shift: float):
    """Wan's scheduler as its diffusers folders ship it: UniPC on flow sigmas."""
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift,
                                   num_train_timesteps=1000)


def wan_pipeline(kind: str = "wan2.1", dims: dict[str, Any] | None = None, real_vae: bool = False):
    """A diffusers WanPipeline of random weights: ``kind`` is wan2.1, wan2.2-ti2v or wan2.2-a14b."""
    from diffusers import WanPipeline

    dims = dims or (TINY_TI2V if kind == "wan2.2-ti2v" else TINY)
    channels = 48 if kind == "wan2.2-ti2v" else 16
    tokens = tokenizer()
    encoder = text_encoder(dims["text_dim"], len(tokens))
    second = transformer(dims, channels, seed=3) if kind == "wan2.2-a14b" else None
    return WanPipeline(tokenizer=tokens, text_encoder=encoder, vae=vae(kind, real=real_vae),
                       scheduler=scheduler(SHIFTS[kind]),
                       transformer=transformer(dims, channels), transformer_2=second,
                       boundary_ratio=0.875 if kind == "wan2.2-a14b" else None,
                       expand_timesteps=kind == "wan2.2-ti2v")


def image_encoder(seed: int = 4):
    """A small random CLIP vision encoder (32-pixel images, 17 tokens of 32 values) and its image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(hidden_size=32, projection_dim=32, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=8, intermediate_size=37)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModelWithProjection(config).eval(), processor


def wan_i2v_pipeline(kind: str = "wan2.1-i2v", dims: dict[str, Any] | None = None):
    """A diffusers WanImageToVideoPipeline of random weights: Wan2.1 I2V (CLIP image tokens and 36 input
    channels) or Wan2.2's I2V A14B layout (two experts, the channels only, no image encoder)."""
    from diffusers import WanImageToVideoPipeline

    dims = dims or TINY
    tokens = tokenizer()
    width = dims["num_attention_heads"] * dims["attention_head_dim"]
    clip, processor = image_encoder() if kind == "wan2.1-i2v" else (None, None)
    image = dict(image_dim=32, added_kv_proj_dim=width) if clip is not None else {}
    first = transformer(dims, 36, out_channels=16, **image)
    second = transformer(dims, 36, seed=3, out_channels=16) if kind == "wan2.2-i2v-a14b" else None
    return WanImageToVideoPipeline(tokenizer=tokens, text_encoder=text_encoder(dims["text_dim"], len(tokens)),
                                   vae=vae("wan2.1"), scheduler=scheduler(SHIFTS["wan2.1"]), image_processor=processor,
                                   image_encoder=clip, transformer=first, transformer_2=second,
                                   boundary_ratio=0.9 if second is not None else None)


def make_wan_folder(path: Path, kind: str = "wan2.1", dims: dict[str, Any] | None = None,
                    max_shard_size: str | None = None, real_vae: bool = False):
    """Write a random-weight Wan folder with ``save_pretrained``; ``max_shard_size`` (e.g. "20KB") shards the
    transformer. Returns the diffusers pipeline that wrote it."""
    pipe = wan_i2v_pipeline(kind, dims) if kind in I2V_KINDS else wan_pipeline(kind, dims, real_vae)
    pipe.save_pretrained(path)
    if max_shard_size is not None:
        for name in ("transformer", "transformer_2"):
            model = getattr(pipe, name)
            if model is not None:
                for old in (Path(path) / name).glob("*.safetensors"):
                    old.unlink()
                model.save_pretrained(Path(path) / name, max_shard_size=max_shard_size)
    return pipe


WAN22_TI2V_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                      temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                      patch_size=2, scale_factor_spatial=16, scale_factor_temporal=4,
                      latents_mean=[0.0] * 48, latents_std=[1.0] * 48)


def write_random_transformer(folder: Path, dims: dict[str, Any], in_channels: int = 16,
                             dtype: torch.dtype = torch.bfloat16, shard_bytes: int = 2 << 30, seed: int = 0) -> int:
    """A WanTransformer3DModel folder of random weights (scale 0.05) in ``dtype``, written shard by shard from the
    shapes of a model built on the meta device, so that a multi-billion-parameter folder never has to fit in memory
    at once: config.json from diffusers' class, safetensors shards and their index. Returns the parameter count."""
    import json

    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file

    with torch.device("meta"):
        model = WanTransformer3DModel(patch_size=(1, 2, 2), in_channels=in_channels, out_channels=in_channels,
                                      cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, **dims)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    generator = torch.Generator().manual_seed(seed)
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    shards: list[list[str]] = [[]]
    size = torch.tensor([], dtype=dtype).element_size()
    used = 0
    for name, shape in shapes.items():
        nbytes = size * int(torch.Size(shape).numel())
        if shards[-1] and used + nbytes > shard_bytes:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
    weight_map = {}
    for n, names in enumerate(shards):
        file = f"diffusion_pytorch_model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: (torch.randn(shapes[name], generator=generator) * 0.05).to(dtype) for name in names}
        save_file(tensors, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, file))
        del tensors
    index = {"metadata": {"total_size": sum(size * int(torch.Size(s).numel()) for s in shapes.values())},
             "weight_map": weight_map}
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return sum(int(torch.Size(s).numel()) for s in shapes.values())


def make_large_wan_folder(path: Path, kind: str, dims: dict[str, Any], dtype: torch.dtype = torch.bfloat16) -> int:
    """A random-weight Wan folder at a real model's transformer and VAE dims (the 1-layer UMT5 of 4096 values
    stands in for the 5.7B text encoder): a tiny pipeline saved by diffusers, its transformer then replaced by
    ``write_random_transformer``'s. Returns the transformer's parameter count."""
    import shutil

    from diffusers import AutoencoderKLWan

    pipe = wan_pipeline(kind, {**dims, "num_layers": 1})
    if kind == "wan2.2-ti2v":
        pipe.vae = AutoencoderKLWan(**WAN22_TI2V_VAE).eval()
    else:
        pipe.vae = AutoencoderKLWan().eval()
    pipe.register_modules(vae=pipe.vae)
    pipe.save_pretrained(path)
    shutil.rmtree(Path(path) / "transformer")
    channels = 48 if kind == "wan2.2-ti2v" else 16
    return write_random_transformer(Path(path) / "transformer", dims, channels, dtype)
