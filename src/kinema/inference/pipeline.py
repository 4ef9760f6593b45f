"""KinemaPipeline: prompts, images and videos in, frames out, in every conditioning mode.

One mechanism serves every mode: each latent frame has its own flow time, known latent frames
(an image, a video to extend, the ends to connect) are held clean at t = 0 while the others are
denoised. Which frames are known is data, a list of ``ConditioningItem``s (``kinema.inference.conditioning``).
``__call__`` reads in numbered sections (check inputs, encode the prompt, prepare latents, known frames,
denoise, decode), and ``denoise``, the loop every pass ends in, reads top to bottom.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils import logging as diffusers_logging

from kinema.diffusion.flow import FlowConfig, shift_for_tokens
from kinema.diffusion.sampling import (
    SAMPLERS,
    experts,
    flow_schedule,
    guided,
    guided_split,
    sample_autoregressive_cached,
    sample_scheduler,
    scheduler_start,
)
from kinema.errors import KinemaError
from kinema.frames import MAX_FRAMES, MAX_PROMPT_CHARS, MAX_SIDE, MODES, is_latent_length, latent_count, latent_length
from kinema.inference.conditioning import ConditioningItem, KnownLatents, conditioning_for_mode, hold
from kinema.inference.settings import Sampling, sampling
from kinema.media import resize_crop
from kinema.models import wan
from kinema.models.dit import FrameCache, VideoDiT
from kinema.models.lora import apply_lora, read_lora
from kinema.models.parallel import ParallelLayout
from kinema.models.text import TextEncoder, UMT5TextEncoder, pad_token_batches
from kinema.models.vae import VideoVAE
from kinema.models.wan import wan_index

diffusers_logging.set_verbosity_error()  # no hints about optional packages in the CLI's output

MAX_TOKENS_PER_PASS = 1 << 16  # patch tokens the transformer may see at once


@dataclass
class KinemaPipelineOutput(BaseOutput):
    frames: np.ndarray  # (B, F, H, W, 3) uint8


@dataclass
class SamplingDefaults:
    steps: int = 20
    guidance_scale: float = 4.0
    storyboard_guidance: float | None = None  # guidance for storyboards (None: guidance_scale)
    sampler: str = "euler"
    shift: float | None = None  # None: grows with the token count (FlowConfig)
    fps: float = 8.0
    # Long videos (kinema.inference.longvideo): latent frames per transformer pass, of which up to `context` are the
    # last frames already made and up to `memory` are memory frames (first of the video, first of the shot).
    window: int = 13
    context: int = 1  # 1 drifts less over 60 s than 2 or 4 (benchmarks/RESULTS.md, "Long videos: context")
    memory: int = 2
    # Flow time of the context frames of every pass after the first: they enter noised to this level, so small
    # errors in the frames just made are not copied forward as if they were exact; memory frames stay clean
    # (0: clean context). 0.3 drifts less over 60 s than clean context (benchmarks/RESULTS.md,
    # "Long videos: context noise").
    context_noise: float = 0.3
    # How strongly each pass after the first pulls the levels (per latent channel and row) and the spread of its
    # new frames back to those of its shot's opening (kinema.inference.longvideo.anchor_levels; 0: not at all,
    # 1: fully).
    anchor: float = 0.0
    # The "ar" sampler makes latent frames one at a time, each attending to the ones before it (a frame-causal
    # model): frames already made enter later ones noised to this flow time (0: clean).
    ar_context_noise: float = 0.0
    negative_prompt: str = ""  # what a call without a negative prompt steers away from (Wan's own for Wan models)
    expand: bool = True  # expand prompts with the world's captioner (only for models trained on its captions)
    guidance_scale_2: float | None = None  # Wan2.2 A14B: the low-noise expert's guidance (None: guidance_scale)
    width: int = 64  # the size a request that names none is made at
    height: int = 64


SAMPLER_NAMES = (*SAMPLERS, "ar", "scheduler")  # "ar": frame by frame with a frame cache
# (sample_autoregressive_cached); "scheduler": the steps of a model folder's own diffusers scheduler (Wan)


def known_prefix(known: torch.Tensor | None) -> bool:
    """Whether the known latent frames (B, F') all come before the frames to make (none known counts): what
    frame-by-frame sampling can condition on. Extending backward, connecting and closing a loop cannot."""
    if known is None:
        return True
    made = (~known).any(dim=0)  # (F',) some batch item makes this frame
    return not bool(made.any()) or not bool(known[:, int(made.float().argmax()):].any())


def check_request(prompt: Any, num_frames: int, height: int, width: int, steps: int, guidance_scale: float,
                  mode: str, strength: float) -> None:
    """Limits checked before anything is allocated; one-line errors naming the field."""
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise KinemaError("prompt must be a non-empty string or a list of strings")
    for p in prompts:
        if not p.strip():
            raise KinemaError("prompt is empty")
        if len(p) > MAX_PROMPT_CHARS:
            raise KinemaError(f"prompt has {len(p)} characters; the limit is {MAX_PROMPT_CHARS}")
    if mode not in MODES:
        raise KinemaError(f"mode '{mode}': choose from {', '.join(MODES)}")
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, int) or value <= 0 or value % 8 or value > MAX_SIDE:
            raise KinemaError(f"{name} {value}: must be a positive multiple of 8, at most {MAX_SIDE}")
    if not isinstance(num_frames, int) or num_frames < 1 or num_frames > MAX_FRAMES:
        raise KinemaError(f"num_frames {num_frames}: must be between 1 and {MAX_FRAMES}")
    if mode != "loop" and not is_latent_length(num_frames):
        raise KinemaError(f"num_frames {num_frames}: must be 1 + 4k (1, 5, 9, 13, ...)")
    if mode == "loop" and (num_frames % 4 or num_frames < 8):
        raise KinemaError(f"num_frames {num_frames}: a loop needs a multiple of 4 frames, at least 8")
    if not isinstance(steps, int) or not (1 <= steps <= 1000):
        raise KinemaError(f"num_inference_steps {steps}: must be between 1 and 1000")
    if not (0.0 <= guidance_scale <= 50.0):
        raise KinemaError(f"guidance_scale {guidance_scale}: must be between 0 and 50")
    if mode == "edit" and not (0.0 < strength <= 1.0):
        raise KinemaError(f"strength {strength}: must be in (0, 1]")


def frames_to_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> (1, 3, F, height, width) in [-1, 1], resized and centre-cropped if needed."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise KinemaError(f"expected frames shaped (F, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[1:3] != (height, width):
        frames = resize_crop(frames, height, width)
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)  # (F, H, W, 3)
    return x.permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W)


def trim_to_latent_length(frames: np.ndarray) -> np.ndarray:
    """Keep the first 1 + 4k frames."""
    return frames[:latent_length(len(frames))]


class KinemaPipeline(DiffusionPipeline):
    """Text-to-video and every 'prompt with images and video' mode on one diffusion transformer."""

    model_cpu_offload_seq = "transformer->transformer_2->vae"
    _optional_components: ClassVar[list[str]] = ["transformer_2"]

    def __init__(self, transformer: VideoDiT, vae: VideoVAE, text_encoder: TextEncoder | None = None,
                 defaults: SamplingDefaults | None = None, flow: FlowConfig | None = None,
                 text_encoder_name: str = "minilm", scheduler: Any = None, transformer_2: VideoDiT | None = None,
                 boundary: float | None = None) -> None:
        super().__init__()
        self.register_modules(transformer=transformer.eval(), vae=vae.eval(),
                              transformer_2=None if transformer_2 is None else transformer_2.eval())
        # A diffusers scheduler that steps the flow ODE (the sampler "scheduler"; Wan folders bring UniPC), and
        # for Wan2.2 A14B the flow time from which down the low-noise expert ``transformer_2`` takes over.
        self.scheduler = scheduler
        self.boundary = boundary
        self.release_text_encoder = False  # free the text encoder after each encoding (it reloads when needed)
        self.text_encoder_device: str | torch.device = "cpu"
        self.text_encoder_dtype = torch.float32
        self.text_encoder_offload = False  # a Wan UMT5 kept in host memory between encodings (CPU offload)
        self.size_multiple = 8  # width and height are multiples of this (a Wan model: VAE compression x patch)
        self.image_encoder: Any = None  # Wan2.1 image to video: its CLIP image encoder (kinema.models.wan)
        self._lora_hooks: list = []
        self._text_encoder = text_encoder
        self.text_encoder_name = text_encoder_name
        self.defaults = defaults or SamplingDefaults()
        self.flow = flow or FlowConfig()
        self.name = "kinema"
        self.weights_sha256: str | None = None
        self.parallel: ParallelLayout | None = None  # enable_parallel

    def enable_parallel(self, split_guidance: bool = True) -> ParallelLayout:
        """Generate each video on all ranks of the default process group (torchrun) together: guidance's two
        passes on two halves of the ranks (``split_guidance``, with an even number of ranks) and every pass's
        tokens shared within a half (``kinema.models.parallel``). Every rank must call this, then make the
        same calls with the same arguments; each gets the whole video."""
        self.parallel = ParallelLayout.create(split_guidance)
        for transformer in (self.transformer, self.transformer_2):  # Wan2.2 A14B's second expert too
            if transformer is not None:
                transformer.set_sequence_parallel(self.parallel.sequence_group)
        return self.parallel

    # -- loading and saving ----------------------------------------------------------------------

    @property
    def text_encoder(self) -> TextEncoder | UMT5TextEncoder:
        if self._text_encoder is None:
            name = self.text_encoder_name
            if name == "minilm":
                self._text_encoder = TextEncoder.default()
            elif (Path(name) / "text_encoder").is_dir():  # a diffusers Wan folder: its UMT5 and tokenizer
                self._text_encoder = UMT5TextEncoder(Path(name) / "text_encoder", Path(name) / "tokenizer",
                                                     device=self.text_encoder_device, dtype=self.text_encoder_dtype,
                                                     offload=self.text_encoder_offload)
            else:
                self._text_encoder = TextEncoder(name)
        return self._text_encoder

    def encoded(self, encode: Callable[[Any], Any]) -> Any:
        """``encode(text_encoder)``, then the encoder freed when ``release_text_encoder`` is set (a Wan UMT5 holds
        several GB that sampling does not need; it loads again for the next prompt)."""
        result = encode(self.text_encoder)
        if self.release_text_encoder:
            self._text_encoder = None
        return result

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, text_encoder: TextEncoder | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        **_: Any) -> KinemaPipeline:
        """Load a pipeline folder: kinema's (model_index.json, transformer/, vae/) or a diffusers Wan folder
        (``from_wan_folder``). Never downloads."""
        folder = Path(path)
        index_file = folder / "model_index.json"
        if not folder.is_dir():
            raise KinemaError(f"model folder '{folder}' does not exist")
        if not index_file.is_file():
            raise KinemaError(f"model folder '{folder}' has no model_index.json")
        if wan_index(folder) is not None:
            return cls.from_wan_folder(folder, device, dtype, text_encoder)
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KinemaError(f"model folder '{folder}': model_index.json is not valid JSON ({e})") from None
        if not isinstance(index, dict):
            raise KinemaError(f"model folder '{folder}': model_index.json must be an object")
        if index.get("_class_name", "KinemaPipeline") != "KinemaPipeline":
            raise KinemaError(f"model folder '{folder}': model_index.json names {index.get('_class_name')!r}; kinema "
                              f"loads its own folders and diffusers Wan folders ({', '.join(wan.WAN_PIPELINES)})")
        try:
            transformer = VideoDiT.from_pretrained(folder / "transformer", local_files_only=True)
        except KinemaError:
            raise
        except Exception as e:  # diffusers raises many types for a broken folder
            message = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise KinemaError(f"cannot load transformer from '{folder / 'transformer'}': {message}") from None
        vae = VideoVAE.from_pretrained(folder / "vae")
        kinema = index.get("kinema", {})
        try:
            defaults = SamplingDefaults(**kinema.get("defaults", {}))
            flow = FlowConfig(**kinema.get("flow", {}))
        except (TypeError, ValueError) as e:
            raise KinemaError(f"model folder '{folder}': bad 'kinema' section in model_index.json ({e})") from None
        encoder_name = kinema.get("text_encoder", "minilm")
        if encoder_name != "minilm" and not Path(encoder_name).is_absolute():
            encoder_name = str(folder / encoder_name)
        pipe = cls(transformer.eval(), vae.eval(), text_encoder, defaults, flow, encoder_name)
        pipe.name = kinema.get("name", folder.name)
        weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
        if weights.is_file():
            from kinema.media import file_sha256

            pipe.weights_sha256 = file_sha256(weights)
        return pipe

    @classmethod
    def from_wan_folder(cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        text_encoder: Any = None) -> KinemaPipeline:
        """A diffusers Wan2.1 / Wan2.2 folder (``kinema.models.wan``): its transformer(s) in ``dtype`` (default
        bf16 on a GPU, fp32 on the CPU), its VAE in fp32 (as diffusers keeps it), the UMT5 text encoder loaded on
        first use, the folder's scheduler, and Wan's sampling defaults for the model's kind."""
        device = torch.device(device)
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        index = wan_index(folder) or {}
        if device.type == "cuda":
            wan.check_gpu_memory(folder, device, dtype)
        transformer = wan.load_transformer(folder / "transformer", device, dtype) if (folder / "transformer").is_dir() \
            else None
        transformer_2 = wan.load_transformer(folder / "transformer_2", device, dtype) \
            if index.get("transformer_2", [None])[0] and (folder / "transformer_2").is_dir() else None
        if transformer is None:
            raise KinemaError(f"model folder '{folder}': transformer/ is missing")
        vae = wan.load_vae(folder / "vae", device, torch.float32)
        scheduler = wan.load_scheduler(folder / "scheduler")
        kind = wan.wan_kind(index, transformer, vae)
        boundary = index.get("boundary_ratio") if transformer_2 is not None else None
        defaults = SamplingDefaults(**wan.wan_defaults(kind, scheduler))
        pipe = cls(transformer, vae, text_encoder, defaults, FlowConfig(), str(folder), scheduler, transformer_2,
                   boundary)
        pipe.text_encoder_device, pipe.text_encoder_dtype = device, dtype
        if transformer.config.image_dim:  # Wan2.1 image to video
            pipe.image_encoder = wan.ClipImageEncoder(folder, device, dtype)
        pipe.name = f"{folder.name} ({kind})"
        pipe.size_multiple = wan.size_multiple(vae, transformer)
        pipe.weights_sha256 = wan.folder_sha256(folder / "transformer")
        return pipe

    # -- LoRAs ---------------------------------------------------------------------------------------

    def load_lora_weights(self, path: str | os.PathLike, scale: float = 1.0,
                          load_into_transformer_2: bool = False) -> None:
        """Apply a LoRA file (``kinema.models.lora``: diffusers/PEFT or a community format) to the transformer, until
        ``unload_lora_weights``. As in diffusers, a Wan2.2 A14B LoRA goes to the high-noise expert, or with
        ``load_into_transformer_2`` to the low-noise one (the experts are trained apart, and so are their LoRAs)."""
        if load_into_transformer_2 and self.transformer_2 is None:
            raise KinemaError(f"lora '{path}': low= names the low-noise expert, and this model has one transformer "
                              "(only Wan2.2 A14B has two)")
        layers = read_lora(path)
        self._lora_hooks += apply_lora(self.transformer_2 if load_into_transformer_2 else self.transformer, layers,
                                       scale)

    def unload_lora_weights(self) -> None:
        """Take every LoRA off (exactly: a LoRA never changes the weights)."""
        for handle in self._lora_hooks:
            handle.remove()
        self._lora_hooks = []

    @contextlib.contextmanager
    def loras(self, specs: Sequence[tuple]) -> Iterator[None]:
        """The LoRAs ``(file, scale)`` or ``(file, scale, expert)`` (``kinema.models.lora.LoraSpec``; expert
        ``high`` or ``low``) applied for the duration of a block (one generation), then taken off."""
        try:
            for path, scale, *expert in specs:
                self.load_lora_weights(path, scale, load_into_transformer_2=expert == ["low"])
            yield
        finally:
            self.unload_lora_weights()

    def save_pretrained(self, path: str | os.PathLike, **_: Any) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.transformer.save_pretrained(folder / "transformer")
        self.vae.save_pretrained(folder / "vae")
        index = {
            "_class_name": "KinemaPipeline",
            "_diffusers_version": __import__("diffusers").__version__,
            "transformer": ["kinema.models.dit", "VideoDiT"],
            "vae": ["kinema.models.vae", "VideoVAE"],
            "kinema": {
                "name": self.name,
                "text_encoder": self.text_encoder_name,
                "defaults": self.defaults.__dict__,
                "flow": {k: v for k, v in self.flow.__dict__.items()},
            },
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")

    # -- pieces ------------------------------------------------------------------------------------

    def encode_text(self, prompts: list[str], negative: list[str]) -> tuple[dict, dict]:
        tokens, mask, neg = self.encoded(lambda encoder: (*encoder.encode(prompts),
                                                          [encoder.encode_cached(n) for n in negative]))
        neg_tokens, neg_mask = pad_token_batches(neg)
        both_tokens, both_masks = pad_token_batches([(tokens, mask), (neg_tokens, neg_mask)])
        tokens, neg_tokens = both_tokens.split([len(prompts), len(negative)])
        mask, neg_mask = both_masks.split([len(prompts), len(negative)])
        dtype = self.transformer.dtype
        return ({"text": tokens.to(dtype), "text_mask": mask}, {"text": neg_tokens.to(dtype), "text_mask": neg_mask})

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(1, 3, F, H, W) in [-1, 1] -> normalized latents (1, C, F', H', W') (posterior mean)."""
        chunk = 32 if video.shape[2] > 64 else None
        latents = self.vae.encode(video.to(self.vae.device, self.vae.dtype), chunk_frames=chunk).mode()
        return self.vae.normalize_latents(latents).cpu()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        chunk = 32 if latents.shape[2] > 16 else None
        video = self.vae.decode(self.vae.denormalize_latents(latents.to(self.vae.device, self.vae.dtype)),
                                chunk_frames=chunk)
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, F, H, W)
        return video.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, F, H, W, 3)

    def latent_grid(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Latent rows and columns for a frame of height x width pixels, and both padded up to the transformer's
        patch: (lh, lw, padded lh, padded lw). Noise is drawn at the padded size, so its values do not depend on
        whether padding is needed."""
        spatial = self.vae.spatial_compression
        _, ph, pw = self.transformer.config.patch_size
        lh, lw = height // spatial, width // spatial
        return lh, lw, lh + (-lh) % ph, lw + (-lw) % pw

    def tokens_per_frame(self, height: int, width: int) -> int:
        _, _, padded_h, padded_w = self.latent_grid(height, width)
        _, ph, pw = self.transformer.config.patch_size
        return (padded_h // ph) * (padded_w // pw)

    def denoise(self, latents: torch.Tensor, known: torch.Tensor | None, known_latents: torch.Tensor | None,
                cond: dict, uncond: dict, steps: int, guidance_scale: float, start: float, shift: float,
                sampler: str, callback, known_time: float | torch.Tensor = 0.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Run the sampler on latents (B, C, F', H', W') from flow time ``start`` to 0, padded (replicating the
        edge) to whole patches; one transformer pass for every step. The pipeline's call and each window of a
        long video (``kinema.inference.longvideo``) end here.

        ``known`` (B, F') marks the latent frames held at ``known_latents`` with flow time ``known_time``.
        ``cond``/``uncond`` hold ``text`` (B, L, D) or (B, S, L, D), ``text_mask`` and optionally
        ``frame_text_index`` (B, F'): which of the S sequences each latent frame attends to.

        The "ar" sampler makes the frames one at a time with a frame cache (``sample_autoregressive_cached``) when
        the known frames come first and sampling starts from noise; otherwise (extending backward, connecting,
        closing a loop, editing) it samples every frame jointly with Euler steps. ``generator`` draws the noise
        its context frames are re-noised with (``ar_context_noise``)."""
        if sampler not in SAMPLER_NAMES:
            raise KinemaError(f"sampler '{sampler}': choose from {', '.join(SAMPLER_NAMES)}")
        frame_by_frame = sampler == "ar" and start == 1.0 and known_prefix(known)
        if sampler == "ar" and not frame_by_frame:
            sampler = "euler"
        h, w = latents.shape[-2:]
        device = self._execution_device  # where the transformer runs (a GPU, also when offloaded; or the CPU)
        latents = latents.to(device)
        known = None if known is None else known.to(device)
        known_latents = None if known_latents is None else known_latents.to(device)
        known_time = known_time.to(device) if isinstance(known_time, torch.Tensor) else known_time
        cond, uncond = ({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in texts.items()}
                        for texts in (cond, uncond))
        _, ph, pw = self.transformer.config.patch_size
        pad = (0, (-w) % pw, 0, (-h) % ph, 0, 0)
        if any(pad):
            latents = torch.nn.functional.pad(latents, pad, mode="replicate")
            if known_latents is not None:
                known_latents = torch.nn.functional.pad(known_latents, pad, mode="replicate")

        batch = latents.shape[0]
        cond = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in cond.items()}
        uncond = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in uncond.items()}
        layout = self.parallel
        split = layout is not None and layout.branches == 2 and guidance_scale != 1.0  # this rank runs one pass

        def guide(transformer: VideoDiT, scale: float) -> Callable[..., torch.Tensor]:
            if split:
                return guided_split(velocity_of(transformer), scale, uncond if layout.branch else cond,
                                    layout.exchange)
            return guided(velocity_of(transformer), scale, cond, uncond)

        fn = guide(self.transformer, guidance_scale)
        if self.transformer_2 is not None and self.boundary is not None:
            # Wan2.2 A14B: the high-noise expert above the boundary, the low-noise one below it with its own
            # guidance (the model's pair unless a guidance was asked for, which then serves both, as in diffusers).
            low_guidance = self.defaults.guidance_scale_2 if guidance_scale == self.defaults.guidance_scale \
                else guidance_scale
            fn = experts(fn, guide(self.transformer_2, low_guidance or guidance_scale), self.boundary)
        if frame_by_frame:
            times = flow_schedule(steps, shift=shift, start=start)
            context_time = self.defaults.ar_context_noise
            noise = torch.randn(latents.shape, generator=generator).to(device) if context_time > 0 else None
            out = sample_autoregressive_cached(fn, latents, times, FrameCache(len(self.transformer.blocks)),
                                               known=known, known_latents=known_latents, callback=callback,
                                               known_time=known_time, context_time=context_time,
                                               context_noise=noise)
        elif sampler == "scheduler":
            if self.scheduler is None:
                raise KinemaError("sampler 'scheduler': this model has no scheduler (choose euler or heun)")
            out = sample_scheduler(fn, latents, self.scheduler, steps, start=start, known=known,
                                   known_latents=known_latents, callback=callback, known_time=known_time)
        else:
            times = flow_schedule(steps, shift=shift, start=start)
            out = SAMPLERS[sampler](fn, latents, times, known=known, known_latents=known_latents, callback=callback,
                                    known_time=known_time)
        return out[..., :h, :w].cpu()  # latents live on the CPU between passes (the samplers' noise is drawn there)

    # -- the call ------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_frames: int = 17,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
        negative_prompt: str | list[str] | None = None,
        image: np.ndarray | None = None,
        video: np.ndarray | None = None,
        video_end: np.ndarray | None = None,
        mode: str | None = None,
        strength: float = 0.7,
        sampler: str | None = None,
        shift: float | None = None,
        callback=None,
        output_type: str = "np",
        conditioning: Sequence[ConditioningItem] | None = None,
    ) -> KinemaPipelineOutput:
        """Generate videos.

        mode: t2v (default), image (1 frame), i2v (``image`` is frame 0), extend_forward /
        extend_backward (``video`` is kept and ``num_frames`` is the total length), loop (a
        seamless loop of ``num_frames`` = 4k frames), connect (``video`` ... ``video_end``),
        edit (SDEdit of ``video`` at ``strength``). ``conditioning`` lists known frames directly
        (``ConditioningItem``: frames that open or close the video) instead of ``image``/``video``/
        ``video_end``. Frames are uint8 (B, F, H, W, 3).
        """
        # 1. Check inputs, resolve the settings, and say which frames are known.
        mode = mode or ("image" if num_frames == 1 else "i2v" if image is not None else "t2v")
        chosen = sampling(self.defaults, num_inference_steps, guidance_scale, sampler)
        check_request(prompt, num_frames, height, width, chosen.steps, chosen.guidance, mode, strength)
        prompts, negatives = prompt_lists(prompt, negative_prompt, self.defaults.negative_prompt)
        self.check_size(height, width)
        if conditioning is None:
            conditioning = conditioning_for_mode(mode, image, video, video_end)
        elif image is not None or video is not None or video_end is not None or mode in ("image", "loop", "edit"):
            raise KinemaError(f"conditioning items are known frames of a video from text; not with image, "
                              f"video, video_end or mode '{mode}'")
        latent_frames = latent_count(num_frames, mode, self.vae.temporal_compression)
        tokens = self.check_tokens(latent_frames, num_frames, height, width)
        shift = shift or self.defaults.shift or shift_for_tokens(tokens, self.flow)

        # 2. Encode the prompt (and the negative prompt, for guidance).
        cond, uncond = self.encode_text(prompts, negatives)

        # 3. Prepare latents: noise drawn at the padded latent size, so its values do not depend on whether
        #    padding is needed; an edit starts from its video's latents noised to ``strength`` (SDEdit).
        batch, channels = len(prompts), self.vae.config.z_dim
        lh, lw, plh, plw = self.latent_grid(height, width)
        noise = torch.randn((batch, channels, latent_frames, plh, plw), generator=generator)[..., :lh, :lw]
        latents, start = noise, 1.0
        if mode == "edit":
            start = self.start_time(chosen, float(strength))
            latents = self.edit_start(video, noise, start, num_frames, height, width)

        # 4. Known frames, held clean: the conditioning encoded by the VAE, or a loop's two ends. A Wan2.1
        #    image-to-video model takes them as input channels instead, with the image's tokens.
        if self.frames_as_channels:
            extra = self.image_condition(conditioning, mode, num_frames, height, width)
            cond, uncond = {**cond, **extra}, {**uncond, **extra}
            known = []
        else:
            known = [self.encode_conditioning(item, height, width) for item in conditioning]
        if mode == "loop":
            known = self.loop_ends(cond, uncond, chosen, shift, generator, (batch, channels, lh, lw, plh, plw))
        mask, known_latents = hold(known, latents.shape)
        if mask is not None and int(mask[0].sum()) >= latents.shape[2]:
            raise KinemaError(f"num_frames {num_frames} leaves nothing to generate around the given video "
                              f"({int(mask[0].sum())} of {latents.shape[2]} latent frames are known)")

        # 5. Denoise.
        latents = self.denoise(latents, mask, known_latents, cond, uncond, chosen.steps, chosen.guidance, start,
                               shift, chosen.sampler, callback, generator=generator)

        # 6. Decode.
        if output_type == "latent":
            return KinemaPipelineOutput(frames=latents)
        frames = self.decode_latents(latents)  # (B, F, H, W, 3)
        if mode == "loop":
            frames = frames[:, :num_frames]
        return KinemaPipelineOutput(frames=frames)

    def check_size(self, height: int, width: int) -> None:
        """Width and height must be whole multiples of the VAE's spatial compression (16 for Wan2.2's VAE)."""
        multiple = self.vae.spatial_compression
        if height % multiple or width % multiple:
            raise KinemaError(f"size {width}x{height}: this model needs multiples of {multiple}")

    def start_time(self, chosen: Sampling, strength: float) -> float:
        """The flow time an edit of ``strength`` starts from: the strength on kinema's grids, the scheduler's first
        time at or below it when the folder's scheduler steps."""
        if chosen.sampler == "scheduler" and self.scheduler is not None:
            return scheduler_start(self.scheduler, chosen.steps, strength)[1]
        return strength

    def check_tokens(self, latent_frames: int, num_frames: int, height: int, width: int) -> int:
        """The patch tokens of one pass over ``latent_frames``; one-line KinemaError over MAX_TOKENS_PER_PASS."""
        tokens = latent_frames * self.tokens_per_frame(height, width)
        if tokens > MAX_TOKENS_PER_PASS:
            raise KinemaError(f"{num_frames} frames at {width}x{height} is {tokens} tokens; one pass allows "
                              f"{MAX_TOKENS_PER_PASS} (use fewer frames or a smaller size)")
        return tokens

    def encode_conditioning(self, item: ConditioningItem, height: int, width: int) -> KnownLatents:
        """An item's latent frames: its frames cut to 1 + 4k and encoded; an item that closes the video drops
        its first latent frame when it has others (that one is encoded alone, as an image)."""
        frames = np.asarray(item.frames)
        frames = trim_to_latent_length(frames[None] if frames.ndim == 3 else frames)
        latents = self.encode_video(frames_to_tensor(frames, height, width))  # (1, C, 1 + k, H', W')
        if item.at == "end" and latents.shape[2] > 1:
            latents = latents[:, :, 1:]
        return KnownLatents(latents, item.at)

    @property
    def frames_as_channels(self) -> bool:
        """Whether known frames enter as input channels (Wan's image-to-video transformers: mask and latents beside
        the noise) rather than as latents held clean at flow time 0."""
        return self.transformer.config.in_channels > self.vae.config.z_dim

    def check_mode(self, mode: str, given: bool = True) -> None:
        """A one-line KinemaError for a mode this model cannot make (checked before a job is queued): Wan's
        image-to-video models make video only from given frames (``given``)."""
        if self.frames_as_channels and (not given or mode not in ("i2v", "extend_forward", "extend_backward",
                                                                  "connect")):
            raise KinemaError(f"a Wan image-to-video model makes video from given frames: give an image (or a video "
                              f"to extend or connect), not mode '{mode}'")

    def image_condition(self, conditioning: Sequence[ConditioningItem], mode: str, num_frames: int, height: int,
                        width: int) -> dict[str, torch.Tensor]:
        """A Wan image-to-video model's inputs, as ``WanImageToVideoPipeline`` makes them for an image: the
        known frames in a video of zeros, encoded by the VAE, after a mask of the known video frames folded into
        the latent frames (the first frame counted ``temporal_compression`` times), (1, 4 + C, F', h, w); and, for
        Wan2.1, the first known frame's image-encoder tokens (1, M, D_image). Known frames that open or close the
        video (extend, connect) go in the same way."""
        self.check_mode(mode, given=bool(conditioning))
        video = torch.zeros(1, 3, num_frames, height, width)
        known = torch.zeros(num_frames, dtype=torch.bool)
        for item in conditioning:
            frames = np.asarray(item.frames)
            pixels = frames_to_tensor(trim_to_latent_length(frames[None] if frames.ndim == 3 else frames), height,
                                      width)  # (1, 3, k, H, W)
            count = min(pixels.shape[2], num_frames)
            where = slice(0, count) if item.at == "start" else slice(num_frames - count, num_frames)
            video[:, :, where] = pixels[:, :, :count]
            known[where] = True
        latents = self.encode_video(video)  # (1, C, F', h, w)
        stride, (lh, lw) = self.vae.temporal_compression, latents.shape[-2:]
        mask = known.float()[None, None, :, None, None].expand(1, 1, num_frames, lh, lw)
        mask = torch.cat([mask[:, :, :1].repeat_interleave(stride, dim=2), mask[:, :, 1:]], dim=2)  # (1, 1, F+3, ..)
        mask = mask.reshape(1, -1, stride, lh, lw).transpose(1, 2)  # (1, 4, F', h, w)
        inputs = {"condition": torch.cat([mask, latents], dim=1)}
        if self.image_encoder is not None:  # Wan2.1 (Wan2.2's A14B image-to-video experts take no image tokens)
            first = np.asarray(conditioning[0].frames)
            inputs["image"] = self.image_encoder.encode([first if first.ndim == 3 else first[0]])  # (1, M, D_image)
        return inputs

    def edit_start(self, video: np.ndarray, noise: torch.Tensor, strength: float, num_frames: int, height: int,
                   width: int) -> torch.Tensor:
        """Where an edit starts sampling (SDEdit, Meng et al. 2022): the video's latents noised to flow time
        ``strength``, (1 - s) x0 + s noise. An edit keeps the video's length."""
        source = trim_to_latent_length(np.asarray(video))
        latent_frames = latent_count(len(source), stride=self.vae.temporal_compression)
        if latent_frames > noise.shape[2]:
            raise KinemaError(f"num_frames {num_frames}: an edit keeps the video's length ({len(source)})")
        noise = noise[:, :, :latent_frames]
        x0 = self.encode_video(frames_to_tensor(source, height, width)).expand(noise.shape[0], -1, -1, -1, -1)
        return (1.0 - strength) * x0 + strength * noise

    def loop_ends(self, cond: dict, uncond: dict, chosen: Sampling, shift: float, generator: torch.Generator | None,
                  grid: tuple[int, int, int, int, int, int]) -> list[KnownLatents]:
        """A seamless loop's known frames: two latent frames (video frames 0..4) are made first; the clip then
        runs from frame 0 to frames 4k+1..4k+4, which must equal frames 1..4, so frame 4k leads back into
        frame 0. ``grid``: (batch, channels, latent rows, columns, padded rows, padded columns)."""
        batch, channels, lh, lw, plh, plw = grid
        head_noise = torch.randn((batch, channels, 2, plh, plw), generator=generator)
        head = self.denoise(head_noise[..., :lh, :lw], None, None, cond, uncond, chosen.steps, chosen.guidance, 1.0,
                            shift, chosen.sampler, None, generator=generator)
        return [KnownLatents(head[:, :, :1], "start"), KnownLatents(head[:, :, 1:], "end")]


def prompt_lists(prompt: str | list[str], negative_prompt: str | list[str] | None, default_negative: str = ""
                 ) -> tuple[list[str], list[str]]:
    """The prompts of a batch and one negative prompt for each (``default_negative`` when none is given)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negative = negative_prompt if negative_prompt is not None else default_negative
    negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
    if len(negatives) != len(prompts):
        raise KinemaError(f"negative_prompt: got {len(negatives)} for {len(prompts)} prompts")
    return prompts, negatives


def velocity_of(transformer: VideoDiT) -> Callable[..., torch.Tensor]:
    """The sampler's ``model(x, t, text, text_mask, frame_text_index, cache, condition, image)`` for a transformer:
    the text's (and an image's) keys and values are computed once per run (the samplers pass the same objects at
    every step)."""
    prepared: list = []  # (text, mask, image, TextContext)

    def model(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None,
              frame_text_index: torch.Tensor | None = None, cache: FrameCache | None = None,
              condition: torch.Tensor | None = None, image: torch.Tensor | None = None) -> torch.Tensor:
        if not prepared or any(a is not b for a, b in zip(prepared[0][:3], (text, text_mask, image))):
            context = transformer.prepare_text(text.to(transformer.dtype), text_mask,
                                               image=None if image is None else image.to(transformer.dtype))
            prepared[:] = [(text, text_mask, image, context)]
        if cache is not None and frame_text_index is not None:  # x holds the frames after the cached ones
            frame_text_index = frame_text_index[:, cache.frames:cache.frames + x.shape[2]]
        return transformer(x.to(transformer.dtype), t, prepared[0][3], frame_text_index=frame_text_index,
                           cache=cache, condition=condition).float()

    return model
