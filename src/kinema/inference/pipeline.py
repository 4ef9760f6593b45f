"""KinemaPipeline: prompts, images and videos in, frames out, in every conditioning mode, with diffusers' conventions.

``pipe(prompt, num_frames=..., height=..., width=..., num_inference_steps=..., guidance_scale=..., generator=...,
output_type="np" | "pil" | "pt" | "latent", num_videos_per_prompt=..., callback_on_step_end=...).frames`` is the one
code path of the Python API, the CLI, the server and the eval suites. ``__call__`` reads in numbered sections:
resolve the settings (the call's, else the model folder's ``kinema.defaults``), expand the prompt into the caption
style the model was trained on (``kinema.inference.expand``), then generate in one pass (``one_pass``) or window by
window (``kinema.inference.longvideo``), and convert the output.

One mechanism serves every mode: each latent frame has its own flow time, known latent frames (an image, a video
to extend, the ends to connect) are held clean at t = 0 while the others are denoised. Which frames are known is
data, a list of ``ConditioningItem``s (``kinema.inference.conditioning``). ``denoise``, the loop every pass ends in,
reads top to bottom. Every tensor a call makes (noise, text states, masks, known frames) is made on the pipeline's
execution device (``pipe.to(device, dtype)``; ``kinema.devices``); noise from a CPU generator is drawn on the CPU and
moved, so a seed gives the same noise on every device.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils import logging as diffusers_logging
from diffusers.utils.torch_utils import randn_tensor

from kinema.diffusion import SAMPLER_NAMES
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
from kinema.frames import (
    MAX_SIDE,
    is_windowed,
    latent_count,
    latent_length,
    output_frames,
)
from kinema.inference.conditioning import ConditioningItem, KnownLatents, conditioning_for_mode, hold
from kinema.inference.request import check_request
from kinema.inference.settings import (
    INDEX,
    Sampling,
    SamplingDefaults,
    Windows,
    expand_default,
    read_model_index,
    sampling,
    windows,
)
from kinema.media import resize_crop
from kinema.models import wan
from kinema.models.dit import FrameCache, TextContext, VideoDiT
from kinema.models.lora import apply_lora, read_lora
from kinema.models.parallel import ParallelLayout
from kinema.models.text import TextEncoder, UMT5TextEncoder, pad_token_batches
from kinema.models.vae import VideoVAE
from kinema.models.wan import wan_index

diffusers_logging.set_verbosity_error()  # no hints about optional packages in the CLI's output
log = logging.getLogger("kinema.inference")

MAX_TOKENS_PER_PASS = 1 << 16  # patch tokens the transformer may see at once
OUTPUT_TYPES = ("np", "pil", "pt", "latent")
TEXT_KEYS = ("text", "text_mask", "image")  # what ``text_context`` makes the keys and values of, once per generation
# Modes the "ar" sampler makes frame by frame: their known frames (none, an image, a video extended) come first.
FRAME_BY_FRAME_MODES = ("t2v", "image", "i2v", "extend_forward")
MAX_VIDEOS_PER_CALL = 64
# diffusers' DiffusionPipeline.from_pretrained(folder, trust_remote_code=True) imports the class from this file of
# the model folder (model_index.json names it in _class_name); save_pretrained writes it.
PIPELINE_FILE = "pipeline.py"
PIPELINE_FILE_TEXT = '''"""diffusers' entry point to this model folder.

``diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` reads ``_class_name`` in
model_index.json and imports the pipeline class from here; kinema must be installed. ``KinemaPipeline.from_pretrained``
reads the folder without this file.
"""

from kinema.inference.pipeline import KinemaPipeline

__all__ = ["KinemaPipeline"]
'''


@dataclass
class KinemaPipelineOutput(BaseOutput):
    """``frames``: uint8 (B, F, H, W, 3) for "np"; a list (per video) of lists of PIL images for "pil"; float32 in
    [0, 1], (B, F, 3, H, W), for "pt"; the normalized latents (B, C, F', H', W') for "latent". ``prompts``: per video,
    the text the model saw (a storyboard's shot captions joined by " | "); ``expanded_prompts``: per prompt, its
    expansion (None when it was used as given); ``settings``: how the call ran, as written into a file's metadata."""

    frames: Any
    prompts: list[str] = field(default_factory=list)
    expanded_prompts: list[str | None] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def model_settings(section: Any, where: str = "model_index.json") -> tuple[SamplingDefaults, FlowConfig]:
    """The sampling defaults and flow settings of a model folder's ``kinema`` section."""
    section = section if isinstance(section, dict) else {}
    try:
        return SamplingDefaults.from_dict(section.get("defaults", {})), FlowConfig(**section.get("flow", {}))
    except (TypeError, ValueError) as e:
        raise KinemaError(f"{where}: bad 'kinema' section ({e})") from None


def known_prefix(known: torch.Tensor | None) -> bool:
    """Whether the known latent frames (B, F') all come before the frames to make (none known counts): what
    frame-by-frame sampling can condition on. Extending backward, connecting and closing a loop cannot."""
    if known is None:
        return True
    made = (~known).any(dim=0)  # (F',) some batch item makes this frame
    return not bool(made.any()) or not bool(known[:, int(made.float().argmax()):].any())


def frames_to_tensor(frames: np.ndarray, height: int, width: int) -> torch.Tensor:
    """uint8 (F, H, W, 3) -> (1, 3, F, height, width) in [-1, 1] on the CPU, resized and centre-cropped if needed."""
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise KinemaError(f"expected frames shaped (F, H, W, 3), got {tuple(frames.shape)}")
    if frames.shape[1:3] != (height, width):
        frames = resize_crop(frames, height, width)
    x = torch.from_numpy(np.ascontiguousarray(frames)).float().div(127.5).sub(1.0)  # (F, H, W, 3)
    return x.permute(3, 0, 1, 2)[None]  # (1, 3, F, H, W)


def same_tensor(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Whether two tensors are the same view of the same, unchanged storage (None matches None)."""
    if a is None or b is None or a.is_inference() or b.is_inference():  # inference tensors keep no version count
        return a is b
    same_storage = a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
    return (same_storage and a.storage_offset() == b.storage_offset() and a.shape == b.shape
            and a.stride() == b.stride() and a.dtype == b.dtype and a._version == b._version)


def trim_to_latent_length(frames: np.ndarray) -> np.ndarray:
    """Keep the first 1 + 4k frames."""
    return frames[:latent_length(len(frames))]


@dataclass(frozen=True)
class Call:
    """What one call of the pipeline makes, every setting resolved: the call's own, else the model's."""

    mode: str
    prompts: list[str]  # one per prompt (before expansion); a storyboard's scene
    negatives: list[str]
    num_frames: int
    height: int
    width: int
    fps: float
    videos_per_prompt: int
    chosen: Sampling
    windows: Windows
    windowed: bool
    storyboard: Any  # a kinema.inference.storyboard.Storyboard, or None
    expand: bool
    expand_with: str | None  # an OpenAI-compatible chat endpoint that extends each prompt (kinema.inference.chat)
    world_prompts: bool  # the model draws the simulated world: warn about prompts that name nothing of it
    seed: int  # seeds the prompt expansion (the generator's initial seed; 0 without one)
    given: int  # latent frames of the video being extended forward (the passes continue from them); else 0


class KinemaPipeline(DiffusionPipeline):
    """Text-to-video and every 'prompt with images and video' mode on one diffusion transformer."""

    model_cpu_offload_seq = "transformer->transformer_2->vae"
    _optional_components: ClassVar[list[str]] = ["transformer_2"]
    _callback_tensor_inputs: ClassVar[list[str]] = ["latents"]  # what callback_on_step_end may read and replace

    def __init__(self, transformer: VideoDiT, vae: VideoVAE, text_encoder: TextEncoder | None = None,
                 defaults: SamplingDefaults | None = None, flow: FlowConfig | None = None,
                 text_encoder_name: str = "minilm", kinema: dict | None = None, scheduler: Any = None,
                 transformer_2: VideoDiT | None = None, boundary: float | None = None) -> None:
        """``kinema``: a model folder's ``kinema`` section of model_index.json (defaults, flow, name, text encoder),
        which diffusers' ``DiffusionPipeline.from_pretrained`` hands over; explicit ``defaults``, ``flow`` and
        ``text_encoder_name`` win over it."""
        super().__init__()
        self.register_modules(transformer=transformer.eval(), vae=vae.eval(),
                              transformer_2=None if transformer_2 is None else transformer_2.eval())
        section = kinema if isinstance(kinema, dict) else {}
        folder_defaults, folder_flow = model_settings(section)
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
        self.text_encoder_name = section.get("text_encoder", text_encoder_name) if kinema else text_encoder_name
        self.defaults = defaults or folder_defaults
        self.flow = flow or folder_flow
        self.name = section.get("name", "kinema")
        self.weights_sha256: str | None = None
        self._offload_device: torch.device | None = None  # enable_model_cpu_offload / enable_sequential_cpu_offload
        self._layer_offload = False  # the offload is sequential (accelerate's hooks), not model by model
        self.parallel: ParallelLayout | None = None  # enable_parallel
        self.few_step_folder: Path | None = None  # where the few-step transformer loads from, on first use
        self.few_step_sha256: str | None = None
        self.few_step_model: VideoDiT | None = None
        # (the text tensors, the transformer, their TextContext), one for each transformer: the latest
        # generation's text (text_context)
        self.text_memo: list[tuple[list[torch.Tensor | None], VideoDiT, TextContext]] = []
        # Called by ``denoise`` with what it is asked and the step callback, returning the callback to use: how
        # ``kinema train distill`` records a teacher's trajectories (kinema.train.distill). None: nothing recorded.
        self.trace: Callable[[dict, Any], Any] | None = None

    def enable_parallel(self, split_guidance: bool = True) -> ParallelLayout:
        """Generate each video on all ranks of the default process group (torchrun) together: guidance's two
        passes on two halves of the ranks (``split_guidance``, with an even number of ranks) and every pass's
        tokens shared within a half (``kinema.models.parallel``). Every rank must call this, then make the
        same calls with the same arguments; each gets the whole video."""
        self.parallel = ParallelLayout.create(split_guidance)
        # Wan2.2 A14B's second expert too, and a few-step transformer already loaded
        for transformer in (self.transformer, self.transformer_2, self.few_step_model):
            if transformer is not None:
                transformer.set_sequence_parallel(self.parallel.sequence_group)
        return self.parallel

    # -- loading and saving ----------------------------------------------------------------------

    @property
    def text_encoder(self) -> TextEncoder | UMT5TextEncoder:
        if self._text_encoder is None:
            name = self.text_encoder_name
            if name != "minilm" and not Path(name).is_absolute() and self.name_or_path:
                name = str(Path(self.name_or_path) / name)  # loaded by diffusers: relative to the folder
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
                        torch_dtype: torch.dtype | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, **_: Any) -> KinemaPipeline:
        """Load a pipeline folder: kinema's (model_index.json, transformer/, vae/), a packaged model by name
        (``kinema.weights.find_model``: "kinema-tiny") or a diffusers Wan folder (``from_wan_folder``). Never
        downloads. ``device`` and ``torch_dtype`` (or ``dtype``): where the models go and the dtype they are cast to
        (default: the CPU, float32 whatever the stored precision; a Wan folder's transformers load straight there,
        bf16 by default on a GPU)."""
        from kinema.weights import find_model

        folder = find_model(path)
        dtype = torch_dtype or dtype
        if wan_index(folder) is not None:
            return cls.from_wan_folder(folder, device or "cpu", dtype, text_encoder)
        index = read_model_index(folder)
        if index.get("_class_name", "KinemaPipeline") not in ("KinemaPipeline", [Path(PIPELINE_FILE).stem,
                                                                                 "KinemaPipeline"]):
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
        section = index.get("kinema", {})
        defaults, flow = model_settings(section, f"model folder '{folder}'")
        encoder_name = section.get("text_encoder", "minilm") if isinstance(section, dict) else "minilm"
        if encoder_name != "minilm" and not Path(encoder_name).is_absolute():
            encoder_name = str(folder / encoder_name)
        pipe = cls(transformer.eval(), vae.eval(), text_encoder, defaults, flow, encoder_name)
        if defaults.few_step is not None:
            pipe.find_few_step(folder)
        pipe.name = section.get("name", folder.name) if isinstance(section, dict) else folder.name
        pipe.register_to_config(_name_or_path=str(folder))
        weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
        if weights.is_file():
            from kinema.media import file_sha256

            pipe.weights_sha256 = file_sha256(weights)
        if device is not None or dtype is not None:
            pipe.to(*(() if device is None else (device,)), *(() if dtype is None else (dtype,)))
        return pipe

    @classmethod
    def from_wan_folder(cls, folder: Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        text_encoder: Any = None) -> KinemaPipeline:
        """A diffusers Wan2.1 / Wan2.2 folder (``kinema.models.wan``): its transformer(s) on ``device`` in ``dtype``
        (``kinema.devices``: by default bf16 on a GPU that computes in it, else fp32), its VAE in fp32 (as diffusers
        keeps it), the UMT5 text encoder loaded on first use, the folder's scheduler, and Wan's sampling defaults for
        the model's kind."""
        from kinema.devices import resolve_device, resolve_dtype

        device = resolve_device(device)
        dtype = resolve_dtype(dtype, device)
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
        kind = wan.wan_kind(index, transformer.config.in_channels, vae.config.z_dim)
        boundary = index.get("boundary_ratio") if transformer_2 is not None else None
        defaults = SamplingDefaults(**wan.wan_defaults(kind, scheduler.config))
        pipe = cls(transformer, vae, text_encoder, defaults, FlowConfig(), str(folder), scheduler=scheduler,
                   transformer_2=transformer_2, boundary=boundary)
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
        if self.defaults.few_step is not None:
            self.few_step_transformer.save_pretrained(folder / self.defaults.few_step.transformer)
        index = {
            "_class_name": [Path(PIPELINE_FILE).stem, "KinemaPipeline"],
            "_diffusers_version": __import__("diffusers").__version__,
            "transformer": ["kinema.models.dit", "VideoDiT"],
            "vae": ["kinema.models.vae", "VideoVAE"],
            "kinema": {
                "name": self.name,
                "text_encoder": self.text_encoder_name,
                "defaults": self.defaults.to_dict(),
                "flow": dict(self.flow.__dict__),
            },
        }
        (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        (folder / PIPELINE_FILE).write_text(PIPELINE_FILE_TEXT, encoding="utf-8")

    def find_few_step(self, folder: Path) -> None:
        """Where the few-step transformer that ``defaults.few_step`` names lies in a model folder (loaded on first
        use), and its weights' SHA-256; one-line KinemaError when the folder does not hold it."""
        few_step = folder / self.defaults.few_step.transformer
        if not (few_step / "config.json").is_file():
            raise KinemaError(f"model folder '{folder}': model_index.json names a few-step transformer "
                              f"'{self.defaults.few_step.transformer}' that the folder does not hold")
        self.few_step_folder = few_step
        weights = few_step / "diffusion_pytorch_model.safetensors"
        if weights.is_file():
            from kinema.media import file_sha256

            self.few_step_sha256 = file_sha256(weights)

    @property
    def few_step_transformer(self) -> VideoDiT:
        """The few-step transformer the folder holds beside the teacher (``defaults.few_step``), loaded on first use
        onto the teacher's device and dtype (with CPU offload it moves to the GPU while it runs, as the teacher)."""
        if self.few_step_model is None:
            if self.few_step_folder is None:
                raise KinemaError(f"model '{self.name}' has no few-step transformer")
            try:
                model = VideoDiT.from_pretrained(self.few_step_folder, local_files_only=True)
            except KinemaError:
                raise
            except Exception as e:  # diffusers raises many types for a broken folder
                message = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise KinemaError(f"cannot load the few-step transformer from '{self.few_step_folder}': "
                                  f"{message}") from None
            if tuple(model.config.patch_size) != tuple(self.transformer.config.patch_size):
                raise KinemaError(f"few-step transformer '{self.few_step_folder}': its patch size differs")
            self.few_step_model = model.eval().to(self.transformer.device, self.transformer.dtype)
            if self.parallel is not None:
                self.few_step_model.set_sequence_parallel(self.parallel.sequence_group)
        return self.few_step_model

    # -- devices -------------------------------------------------------------------------------------

    def to(self, *args: Any, **kwargs: Any) -> KinemaPipeline:
        """diffusers' ``pipe.to(device, dtype)``: moves (and casts) the transformer and the VAE; the text encoder
        follows to the device (it computes in float32). A device is checked first (``kinema.devices``), so a
        missing GPU is a one-line error."""
        from kinema.devices import resolve_device

        device = kwargs.get("device")
        positional = [a for a in args if not isinstance(a, torch.dtype)]
        if device is None and positional:
            device = positional[0]
        if device is not None:
            device = resolve_device(device)
            kwargs["device"] = device
            args = tuple(a for a in args if isinstance(a, torch.dtype))
            self._offload_device, self._layer_offload = None, False
        super().to(*args, **kwargs)
        if device is not None and self._text_encoder is not None and hasattr(self._text_encoder, "to"):
            self._text_encoder.to(device)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def _execution_device(self) -> torch.device:
        """Where a call computes: the offload device after ``enable_model_cpu_offload`` or
        ``enable_sequential_cpu_offload``, else the models' device."""
        return self._offload_device or self.transformer.device

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None) -> None:
        """Keep the transformer and the VAE in CPU memory and move each to ``device`` only while it runs (diffusers'
        model offload, done here without accelerate): GPU memory holds one model at a time. ``device``: default
        ``cuda:gpu_id`` (``cuda``)."""
        from kinema.devices import resolve_device

        target = resolve_device(device if device is not None else "cuda" if gpu_id is None else f"cuda:{gpu_id}")
        DiffusionPipeline.to(self, "cpu")
        self._offload_device, self._layer_offload = target, False

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: torch.device | str | None = None
                                      ) -> None:
        """diffusers' sequential offload: accelerate's hooks move each layer's weights to ``device`` only while it
        runs (the least GPU memory, and the slowest). ``device``: default ``cuda:gpu_id`` (``cuda``)."""
        from kinema.devices import resolve_device

        target = resolve_device(device if device is not None else "cuda" if gpu_id is None else f"cuda:{gpu_id}")
        super().enable_sequential_cpu_offload(device=target)
        self._offload_device, self._layer_offload = target, True

    @property
    def model_offload(self) -> bool:
        """Whether ``enable_model_cpu_offload`` is on: each model moves to the execution device while it runs."""
        return self._offload_device is not None and not self._layer_offload

    @contextlib.contextmanager
    def taking_turns(self) -> Iterator[Callable[[torch.nn.Module], None]]:
        """For sampling: ``place(transformer)`` before each step. With model CPU offload it moves that transformer
        to the execution device when its turn comes and the one before back to the CPU (Wan2.2 A14B's experts: one
        on the GPU at a time), and the last back to the CPU after the block; otherwise it does nothing."""
        current: list[torch.nn.Module] = []

        def place(transformer: torch.nn.Module) -> None:
            if not self.model_offload or (current and current[0] is transformer):
                return
            for module in current:
                module.to("cpu")
            transformer.to(self._offload_device)
            current[:] = [transformer]

        try:
            yield place
        finally:
            for module in current:
                module.to("cpu")

    @contextlib.contextmanager
    def running(self, module: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """``module`` on the execution device while the block runs; with model CPU offload it goes back to the CPU
        after (with sequential offload accelerate's hooks move its layers)."""
        if not self.model_offload:
            yield module
            return
        module.to(self._offload_device)
        try:
            yield module
        finally:
            module.to("cpu")

    # -- pieces ------------------------------------------------------------------------------------

    def encode_text(self, prompts: list[str], negative: list[str]) -> tuple[dict, dict]:
        """Token states (B, L, D) and masks (B, L) of the prompts and of their negative prompts, padded to one
        length, on the execution device in the transformer's dtype."""
        tokens, mask, neg = self.encoded(lambda encoder: (*encoder.encode(prompts),
                                                          [encoder.encode_cached(n) for n in negative]))
        neg_tokens, neg_mask = pad_token_batches(neg)
        both_tokens, both_masks = pad_token_batches([(tokens, mask), (neg_tokens, neg_mask)])
        device, dtype = self._execution_device, self.transformer.dtype
        both_tokens, both_masks = both_tokens.to(device, dtype), both_masks.to(device)
        tokens, neg_tokens = both_tokens.split([len(prompts), len(negative)])
        mask, neg_mask = both_masks.split([len(prompts), len(negative)])
        return {"text": tokens, "text_mask": mask}, {"text": neg_tokens, "text_mask": neg_mask}

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """(1, 3, F, H, W) in [-1, 1] -> normalized latents (1, C, F', H', W') (posterior mean), float32 on the
        execution device."""
        chunk = 32 if video.shape[2] > 64 else None
        with self.running(self.vae) as vae:
            latents = vae.encode(video.to(self._execution_device, vae.dtype), chunk_frames=chunk).mode()
            return vae.normalize_latents(latents).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> np.ndarray:
        """Normalized latents (B, C, F', H', W') -> uint8 frames (B, F, H, W, 3) on the CPU."""
        chunk = 32 if latents.shape[2] > 16 else None
        with self.running(self.vae) as vae:
            video = vae.decode(vae.denormalize_latents(latents.to(self._execution_device, vae.dtype)),
                               chunk_frames=chunk)
        video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (B, 3, F, H, W)
        return video.permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, F, H, W, 3)

    def noise(self, shape: Sequence[int], generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
        """Standard normal noise (float32) on the execution device; a CPU generator draws it on the CPU, so a seed
        gives the same noise on every device (diffusers' ``randn_tensor``)."""
        return randn_tensor(tuple(shape), generator=generator, device=self._execution_device, dtype=torch.float32)

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
                generator: torch.Generator | None = None, few_step: bool = False,
                step_cache: float = 0.0) -> torch.Tensor:
        """Run the sampler on latents (B, C, F', H', W') from flow time ``start`` to 0, padded (replicating the
        edge) to whole patches; one transformer pass for every step. The pipeline's call and each window of a
        long video (``kinema.inference.longvideo``) end here.

        ``known`` (B, F') marks the latent frames held at ``known_latents`` with flow time ``known_time``.
        ``cond``/``uncond`` hold ``text`` (B, L, D) or (B, S, L, D), ``text_mask`` and optionally
        ``frame_text_index`` (B, F'): which of the S sequences each latent frame attends to. ``callback(step,
        steps, latents, t)`` runs after each step (t: the flow time reached); a tensor it returns replaces the
        latents. ``few_step``: sample with the few-step transformer (``SamplingDefaults.few_step``) instead (alone,
        also for a model with two experts). ``step_cache`` > 0 turns diffusers' First-Block Cache on at that
        threshold for this pass on every transformer it runs (both Wan2.2 A14B experts; not one that has a cache
        on already).

        The "ar" sampler makes the frames one at a time with a frame cache (``sample_autoregressive_cached``) when
        the known frames come first and sampling starts from noise; otherwise (extending backward, connecting,
        closing a loop, editing) it samples every frame jointly with Euler steps. ``generator`` draws the noise
        its context frames are re-noised with (``ar_context_noise``).

        With step caching on a transformer (``enable_cache``), each call runs in its cache context, and the cache
        starts afresh with every pass, every frame of the "ar" sampler and every call whose keys and values the
        frame cache keeps."""
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
        two_experts = self.transformer_2 is not None and self.boundary is not None and not few_step
        transformers = [self.few_step_transformer if few_step else self.transformer]
        if two_experts:
            transformers.append(self.transformer_2)
        _, ph, pw = transformers[0].config.patch_size
        pad = (0, (-w) % pw, 0, (-h) % ph, 0, 0)
        if any(pad):
            latents = torch.nn.functional.pad(latents, pad, mode="replicate")
            if known_latents is not None:
                known_latents = torch.nn.functional.pad(known_latents, pad, mode="replicate")

        def cropped(step: int, total: int, x: torch.Tensor) -> torch.Tensor | None:
            """The callback sees the latents at their own size; what it returns is padded again."""
            if callback is None:
                return None
            # frame by frame, steps count on over the frames: step k of a frame is (step - 1) % per_frame + 1
            per_frame = len(times) - 1
            replaced = callback(step, total, x[..., :h, :w], float(times[(step - 1) % per_frame + 1]))
            if replaced is None:
                return None
            return torch.nn.functional.pad(replaced, pad, mode="replicate") if any(pad) else replaced

        batch = latents.shape[0]
        cond = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in cond.items()}
        uncond = {k: v.expand(batch, *v.shape[1:]) if v.shape[0] == 1 else v for k, v in uncond.items()}
        layout = self.parallel
        split = layout is not None and layout.branches == 2 and guidance_scale != 1.0  # this rank runs one pass
        if step_cache > 0 and layout is not None:
            # each rank would decide on its own shard of tokens whether to skip, and the ranks' collectives of the
            # skipped blocks would no longer pair up
            raise KinemaError("step caching cannot be combined with generation on several ranks")
        if sampler == "scheduler":
            if self.scheduler is None:
                raise KinemaError("sampler 'scheduler': this model has no scheduler (choose euler or heun)")
            first, _ = scheduler_start(self.scheduler, steps, start)
            times = self.scheduler.sigmas[first:].float().cpu()  # the flow times the steps reach (the last is 0)
        else:
            times = flow_schedule(steps, shift=shift, start=start)
        context_time = self.defaults.ar_context_noise if frame_by_frame else 0.0
        noise = self.noise(latents.shape, generator) if context_time > 0 else None
        step_callback = cropped
        if self.trace is not None:
            step_callback = self.trace(dict(sampler="ar" if frame_by_frame else sampler, latents=latents, known=known,
                                            known_latents=known_latents, known_time=known_time, times=times,
                                            cond=cond, guidance=guidance_scale, context_time=context_time,
                                            context_noise=noise), cropped)
        with self.taking_turns() as place, step_caching(transformers, step_cache):

            def guide(transformer: VideoDiT, scale: float) -> Callable[..., torch.Tensor]:
                # the text's keys and values, made once per generation (text_context): the two halves batched as
                # ``guided`` batches them, or this rank's half alone
                own = (uncond if layout.branch else cond) if split else cond
                other = None if scale == 1.0 or split else uncond
                velocity = velocity_of(transformer, lambda: place(transformer),
                                       lambda: self.text_context(transformer, own, other))
                per_step = [k for k in cond if k not in TEXT_KEYS]  # the text itself is in the context
                if split:
                    return guided_split(velocity, scale, {k: own[k] for k in per_step}, layout.exchange)
                return guided(velocity, scale, {k: cond[k] for k in per_step}, {k: uncond[k] for k in per_step})

            fn = guide(transformers[0], guidance_scale)
            if two_experts:
                # Wan2.2 A14B: the high-noise expert above the boundary, the low-noise one below it with its own
                # guidance (the model's pair unless a guidance was asked for, which then serves both, as in
                # diffusers).
                low_guidance = self.defaults.guidance_scale_2 if guidance_scale == self.defaults.guidance_scale \
                    else guidance_scale
                fn = experts(fn, guide(self.transformer_2, low_guidance or guidance_scale), self.boundary)
            if frame_by_frame:
                out = sample_autoregressive_cached(fn, latents, times, FrameCache(len(transformers[0].blocks)),
                                                   known=known, known_latents=known_latents, callback=step_callback,
                                                   known_time=known_time, context_time=context_time,
                                                   context_noise=noise)
            elif sampler == "scheduler":
                out = sample_scheduler(fn, latents, self.scheduler, steps, start=start, known=known,
                                       known_latents=known_latents, callback=step_callback, known_time=known_time)
            else:
                out = SAMPLERS[sampler](fn, latents, times, known=known, known_latents=known_latents,
                                        callback=step_callback, known_time=known_time)
        return out[..., :h, :w]

    def text_context(self, transformer: VideoDiT, cond: dict, uncond: dict | None) -> TextContext:
        """The text as every step reads it: projected, with each block's cross-attention keys and values (and an
        image's, ``VideoDiT.prepare_text``), the conditional and unconditional halves batched as ``guided`` batches
        them (``uncond`` None: the conditional text alone). Computed once per generation and transformer: kept
        while the same text tensors come back (every window of a long video, a loop's opening pass), compared by
        storage, view and version, and held so that their storage cannot be reused by other tensors meanwhile."""
        halves = [cond] if uncond is None else [cond, uncond]
        parts = [half.get(key) for half in halves for key in TEXT_KEYS]
        for memo_parts, memo_transformer, context in self.text_memo:
            if memo_transformer is transformer and len(memo_parts) == len(parts) and all(
                    same_tensor(a, b) for a, b in zip(memo_parts, parts)):
                return context
        text, mask, image = (merged_halves([half.get(key) for half in halves]) for key in TEXT_KEYS)
        context = transformer.prepare_text(text.to(transformer.dtype), mask,
                                           image=None if image is None else image.to(transformer.dtype))
        kept = [m for m in self.text_memo if m[1] is not transformer and any(
            m[1] is t for t in (self.transformer, self.transformer_2, self.few_step_model))]
        self.text_memo = [*kept, (parts, transformer, context)]
        return context

    # -- the call ------------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        negative_prompt: str | list[str] | None = None,
        image: np.ndarray | None = None,
        video: np.ndarray | None = None,
        video_end: np.ndarray | None = None,
        mode: str | None = None,
        strength: float = 0.7,
        sampler: str | None = None,
        shift: float | None = None,
        callback: Callable[[int, int, torch.Tensor | None], Any] | None = None,
        output_type: str = "np",
        conditioning: Sequence[ConditioningItem] | None = None,
        num_videos_per_prompt: int = 1,
        callback_on_step_end: Callable[..., dict] | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        storyboard: Any = None,
        expand: bool | None = None,
        expand_with: str | None = None,
        fps: float | None = None,
        window: int | None = None,
        context: int | None = None,
        memory: int | None = None,
        context_noise: float | None = None,
        anchor: float | None = None,
        return_dict: bool = True,
        step_cache: float | None = None,
    ) -> KinemaPipelineOutput | tuple:
        """Generate videos (or images, ``num_frames=1``) in any mode.

        Every setting left as None comes from the model folder's defaults (``self.defaults``): ``num_frames`` from
        its ``seconds`` and ``fps`` (for extend and connect: the input plus that much; for an edit: the input's
        length), ``height`` and ``width`` from its ``size``, steps, guidance, sampler and, for videos longer than
        one transformer pass, ``window``, ``context``, ``memory``, ``context_noise`` and ``anchor``. ``expand``
        (default: the model's) rewrites each prompt in the caption style of the simulated world, describing the
        input image or video with the analyzer (``kinema.inference.expand``), seeded by the generator's initial
        seed; ``expand_with`` (a URL) has an OpenAI-compatible chat endpoint extend each prompt instead
        (``kinema.inference.chat``, as Wan's prompt extension). A video longer than one pass, and a ``storyboard``
        (``kinema.inference.storyboard``: shots with their own prompts; ``prompt`` is its scene), is made window by
        window.

        mode: t2v (default), image (1 frame), i2v (``image`` is frame 0), extend_forward / extend_backward
        (``video`` is kept and ``num_frames`` is the total length), loop (a seamless loop of ``num_frames`` = 4k
        frames), connect (``video`` ... ``video_end``), edit (SDEdit of ``video`` at ``strength``). ``conditioning``
        lists known frames directly (``ConditioningItem``: frames that open or close the video) instead of
        ``image``/``video``/``video_end``. Input frames are uint8 (F, H, W, 3).

        ``callback_on_step_end(pipe, step, t, {"latents": ...})`` (diffusers' convention) runs after each sampling
        step and may return ``{"latents": ...}`` to replace them; ``callback(done, total, latents)`` counts the
        sampling steps of every pass plus one for decoding (then ``latents`` is None).

        ``step_cache``: a First-Block Cache threshold (default: the model's ``step_cache``; 0: off). Asking for at
        most the few-step transformer's ``max_steps`` steps, when the model holds one (``SamplingDefaults.few_step``),
        samples with it.
        """
        # 1. Check inputs and resolve the settings: the call's, else the model's.
        call = self.resolve_call(
            prompt=prompt, num_frames=num_frames, height=height, width=width, num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale, generator=generator, negative_prompt=negative_prompt, image=image,
            video=video, video_end=video_end, mode=mode, strength=strength, sampler=sampler, conditioning=conditioning,
            num_videos_per_prompt=num_videos_per_prompt, storyboard=storyboard, expand=expand, expand_with=expand_with,
            fps=fps, window=window, context=context, memory=memory, context_noise=context_noise, anchor=anchor,
            step_cache=step_cache)
        check_callbacks(callback=callback, callback_on_step_end=callback_on_step_end)
        if output_type not in OUTPUT_TYPES:
            raise KinemaError(f"output_type '{output_type}': choose {', '.join(OUTPUT_TYPES)}")
        unknown = set(callback_on_step_end_tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise KinemaError(f"callback_on_step_end_tensor_inputs {sorted(unknown)}: choose from "
                              f"{self._callback_tensor_inputs}")
        steps_done = self.step_reporter(call, callback, callback_on_step_end)

        items = self.known_items(call.mode, image, video, video_end, conditioning)

        # 2. Expand each prompt into the caption style the model was trained on, on what the input shows.
        from kinema.inference.expand import expand_prompts

        texts, expanded = expand_prompts(call, items, video if call.mode == "edit" else None)

        # 3. Generate: one pass, or window by window.
        if call.windowed:
            latents, settings = self.windowed_passes(call, texts, generator, image, video, steps_done)
        else:
            latents = self.one_pass(call, texts, generator, items, video, strength, shift, steps_done)
            settings = {}

        # 4. Decode, and convert to the output type.
        settings = {"steps": call.chosen.steps, "guidance": call.chosen.guidance, "sampler": call.chosen.sampler,
                    "few_step": call.chosen.few_step, "step_cache": call.chosen.step_cache,
                    **({"few_step_sha256": self.few_step_sha256} if call.chosen.few_step else {}), "fps": call.fps,
                    "mode": call.mode, "expand": call.expand, **settings}
        if call.storyboard is not None:
            seen = [" | ".join(settings["shot_texts"])]
        else:
            seen = [text for text in texts for _ in range(call.videos_per_prompt)]
        if output_type == "latent":
            frames: Any = latents
        else:
            frames = self.decode_latents(latents)  # (B, F, H, W, 3)
            if call.mode == "loop":
                frames = frames[:, :call.num_frames]
            if callback is not None:
                callback(steps_done.total, steps_done.total, None)
            frames = convert_frames(frames, output_type)
        if not return_dict:
            return (frames,)
        return KinemaPipelineOutput(frames=frames, prompts=seen, expanded_prompts=expanded, settings=settings)

    def resolve_call(self, prompt: str | list[str] | None = None, num_frames: int | None = None,
                     height: int | None = None, width: int | None = None, num_inference_steps: int | None = None,
                     guidance_scale: float | None = None, generator=None, negative_prompt=None, image=None,
                     video=None, video_end=None, mode: str | None = None, strength: float = 0.7,
                     sampler: str | None = None, conditioning=None, num_videos_per_prompt: int = 1, storyboard=None,
                     expand: bool | None = None, expand_with: str | None = None, fps: float | None = None,
                     window: int | None = None,
                     context: int | None = None, memory: int | None = None, context_noise: float | None = None,
                     anchor: float | None = None, step_cache: float | None = None, **_: Any) -> Call:
        """Every setting of a call: its own, else the model's; checked before anything is allocated. Takes the
        call's keyword arguments (those it does not need are ignored)."""
        from kinema.config import parse_size
        from kinema.inference.storyboard import Storyboard, storyboard_from_dict

        board = storyboard
        if isinstance(board, dict):
            board = storyboard_from_dict(board)
        if board is not None and not isinstance(board, Storyboard):
            raise KinemaError("storyboard must be a Storyboard or a mapping {scene, shots}")
        if board is not None and prompt and not board.scene:  # a prompt given with a storyboard is its scene
            board = Storyboard(board.shots, prompt.strip() if isinstance(prompt, str) else "")
        if board is None and prompt is None:
            raise KinemaError("prompt is missing")
        fps = float(self.defaults.fps if fps is None else fps)
        if isinstance(fps, bool) or not 0 < fps <= 60:
            raise KinemaError(f"fps {fps}: must be > 0 and at most 60")
        if height is None or width is None:
            default_width, default_height = parse_size(self.defaults.size, max_side=MAX_SIDE)
            height = default_height if height is None else height
            width = default_width if width is None else width
        videos_per_prompt = num_videos_per_prompt
        if isinstance(videos_per_prompt, bool) or not isinstance(videos_per_prompt, int) or not (
                1 <= videos_per_prompt <= MAX_VIDEOS_PER_CALL):
            raise KinemaError(f"num_videos_per_prompt {videos_per_prompt}: must be between 1 and {MAX_VIDEOS_PER_CALL}")
        if board is not None:
            num_frames = board.frame_plan(fps)[0] if num_frames is None else num_frames
            mode = mode or ("i2v" if image is not None else "t2v")
            if mode not in ("t2v", "i2v"):
                raise KinemaError(f"a storyboard makes a video from text (or from an image), not with mode '{mode}'")
        mode = mode or ("image" if num_frames == 1 else "i2v" if image is not None else "t2v")
        if num_frames is None:
            inputs = [len(trim_to_latent_length(np.asarray(v))) for v in (video, video_end) if v is not None]
            if mode in ("extend_forward", "extend_backward", "connect", "edit") and len(inputs) < (
                    2 if mode == "connect" else 1):
                raise KinemaError(f"mode '{mode}' needs {'two videos' if mode == 'connect' else 'a video'}")
            num_frames = output_frames(mode, self.defaults.seconds, fps, inputs)
        chosen = sampling(self.defaults, num_inference_steps, guidance_scale, sampler, board is not None, step_cache)
        check_request(board.shot_texts() if board is not None else prompt, num_frames, height, width, chosen.steps,
                      chosen.guidance, mode, strength, chosen.step_cache)
        if chosen.sampler not in SAMPLER_NAMES:
            raise KinemaError(f"sampler '{chosen.sampler}': choose from {', '.join(SAMPLER_NAMES)}")
        prompts = [board.scene] if board is not None else [prompt] if isinstance(prompt, str) else list(prompt)
        _, negatives = prompt_lists(prompts, negative_prompt, self.defaults.negative_prompt)
        self.check_size(height, width)
        check_generator(generator, len(prompts) * videos_per_prompt)
        settings = windows(self.defaults, window, context, memory, context_noise, anchor)
        latent_frames = latent_count(num_frames, mode, self.vae.temporal_compression)
        windowed = conditioning is None and is_windowed(mode, latent_frames, settings.window, board is not None)
        self.check_tokens(min(latent_frames, settings.window) if windowed else latent_frames, num_frames, height, width)
        if windowed and board is not None and len(prompts) * videos_per_prompt > 1:
            raise KinemaError("a storyboard makes one video a call")
        return Call(mode=mode, prompts=prompts, negatives=negatives, num_frames=num_frames, height=height, width=width,
                    fps=fps, videos_per_prompt=videos_per_prompt, chosen=chosen, windows=settings, windowed=windowed,
                    storyboard=board, expand=expand_default(self.defaults, board) if expand is None else bool(expand),
                    expand_with=expand_with,
                    world_prompts=bool(self.defaults.expand), seed=generator_seed(generator),
                    given=self.given_latents(video) if mode == "extend_forward" and video is not None else 0)

    def given_latents(self, video: np.ndarray) -> int:
        """Latent frames of an input video (its first 1 + 4k frames)."""
        return latent_count(len(trim_to_latent_length(np.asarray(video))), stride=self.vae.temporal_compression)

    def step_reporter(self, call: Call, callback, callback_on_step_end) -> StepReporter:
        """The sampler's per-step callback for this call: counts steps over every pass and calls both callbacks."""
        from kinema.inference.longvideo import plan_for_call

        steps = call.chosen.steps
        frame_by_frame = call.chosen.sampler == "ar" and call.mode in FRAME_BY_FRAME_MODES  # steps for each frame
        if call.windowed:
            plan = plan_for_call(self, call)
            per_video = sum(steps * (w.count if frame_by_frame else 1) for w in plan)
            total = per_video * len(call.prompts) * call.videos_per_prompt
        elif frame_by_frame:
            made = latent_count(call.num_frames, call.mode, self.vae.temporal_compression) - (
                1 if call.mode == "i2v" else call.given)
            total = steps * made
        else:
            total = steps * (2 if call.mode == "loop" else 1)  # a loop: its two ends first, then the clip
        return StepReporter(self, total + 1, callback, callback_on_step_end)

    @staticmethod
    def known_items(mode: str, image, video, video_end,
                    conditioning: Sequence[ConditioningItem] | None) -> list[ConditioningItem]:
        """The known frames of a call: its ``conditioning`` items, else the mode's (``conditioning_for_mode``)."""
        if conditioning is None:
            return conditioning_for_mode(mode, image, video, video_end)
        if image is not None or video is not None or video_end is not None or mode in ("image", "loop", "edit"):
            raise KinemaError(f"conditioning items are known frames of a video from text; not with image, "
                              f"video, video_end or mode '{mode}'")
        return list(conditioning)

    def one_pass(self, call: Call, texts: list[str], generator, conditioning: Sequence[ConditioningItem], video,
                 strength: float, shift: float | None, reporter: StepReporter) -> torch.Tensor:
        """One transformer pass over the whole video: the normalized latents (B, C, F', H', W')."""
        num_frames, height, width = call.num_frames, call.height, call.width
        latent_frames = latent_count(num_frames, call.mode, self.vae.temporal_compression)
        tokens = self.check_tokens(latent_frames, num_frames, height, width)
        shift = shift or self.defaults.shift or shift_for_tokens(tokens, self.flow)
        prompts = [t for t in texts for _ in range(call.videos_per_prompt)]
        negatives = [n for n in call.negatives for _ in range(call.videos_per_prompt)]

        # Encode the prompt (and the negative prompt, for guidance).
        cond, uncond = self.encode_text(prompts, negatives)

        # Prepare latents: noise drawn at the padded latent size, so its values do not depend on whether padding is
        # needed; an edit starts from its video's latents noised to ``strength`` (SDEdit).
        batch, channels = len(prompts), self.vae.config.z_dim
        lh, lw, plh, plw = self.latent_grid(height, width)
        noise = self.noise((batch, channels, latent_frames, plh, plw), generator)[..., :lh, :lw]
        latents, start = noise, 1.0
        if call.mode == "edit":
            start = self.start_time(call.chosen, float(strength))
            latents = self.edit_start(video, noise, start, num_frames, height, width)

        # Known frames, held clean: the conditioning encoded by the VAE, or a loop's two ends. A Wan
        # image-to-video model takes them as input channels instead, with (Wan2.1) the image's tokens.
        if self.frames_as_channels:
            extra = self.image_condition(conditioning, call.mode, num_frames, height, width)
            cond, uncond = {**cond, **extra}, {**uncond, **extra}
            known = []
        else:
            known = [self.encode_conditioning(item, height, width) for item in conditioning]
        if call.mode == "loop":
            known = self.loop_ends(cond, uncond, call.chosen, shift, generator, (batch, channels, lh, lw, plh, plw),
                                   reporter)
        mask, known_latents = hold(known, latents.shape, latents.device)
        if mask is not None and int(mask[0].sum()) >= latents.shape[2]:
            raise KinemaError(f"num_frames {num_frames} leaves nothing to generate around the given video "
                              f"({int(mask[0].sum())} of {latents.shape[2]} latent frames are known)")

        # Denoise.
        return self.denoise(latents, mask, known_latents, cond, uncond, call.chosen.steps, call.chosen.guidance, start,
                            shift, call.chosen.sampler, reporter.pass_callback(), generator=generator,
                            few_step=call.chosen.few_step, step_cache=call.chosen.step_cache)

    def windowed_passes(self, call: Call, texts: list, generator, image, video,
                        reporter: StepReporter) -> tuple[torch.Tensor, dict]:
        """A storyboard, or a video longer than one pass: ``kinema.inference.longvideo``, video by video. Returns
        the latents (B, C, F', H', W') and the window settings (with a storyboard's shots) for the metadata."""
        from kinema.inference import longvideo

        settings: dict = call.windows.as_dict()
        if call.storyboard is not None:
            shots, shot_starts = list(texts), call.storyboard.frame_plan(call.fps)[1]  # expand_prompts' shot texts
            per_video = [shots]
            settings |= {"storyboard": call.storyboard.to_dict(), "shot_texts": shots, "shot_starts": shot_starts}
        else:
            shot_starts = [0]
            per_video = [[text] for text in texts]
        generators = generator if isinstance(generator, list) else None
        videos = []
        for n, shot_texts in enumerate(v for v in per_video for _ in range(call.videos_per_prompt)):
            videos.append(longvideo.generate_long(
                self, shot_texts, call.num_frames, call.height, call.width, shot_starts=shot_starts,
                num_inference_steps=call.chosen.steps, guidance_scale=call.chosen.guidance,
                generator=generators[n] if generators else generator, negative_prompt=call.negatives[
                    n // call.videos_per_prompt] if call.storyboard is None else call.negatives[0], image=image,
                video=video, sampler=call.chosen.sampler, callback=reporter.pass_callback(), output_type="latent",
                step_cache=call.chosen.step_cache, **call.windows.as_dict()))
        return torch.cat(videos), settings

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
        mask = known.to(latents.device, torch.float32)[None, None, :, None, None].expand(1, 1, num_frames, lh, lw)
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

    def loop_ends(self, cond: dict, uncond: dict, chosen: Sampling, shift: float, generator, grid: tuple,
                  reporter: StepReporter | None = None) -> list[KnownLatents]:
        """A seamless loop's known frames: two latent frames (video frames 0..4) are made first; the clip then
        runs from frame 0 to frames 4k+1..4k+4, which must equal frames 1..4, so frame 4k leads back into
        frame 0. ``grid``: (batch, channels, latent rows, columns, padded rows, padded columns)."""
        batch, channels, lh, lw, plh, plw = grid
        head_noise = self.noise((batch, channels, 2, plh, plw), generator)
        head = self.denoise(head_noise[..., :lh, :lw], None, None, cond, uncond, chosen.steps, chosen.guidance, 1.0,
                            shift, chosen.sampler, reporter.pass_callback() if reporter else None, generator=generator,
                            few_step=chosen.few_step, step_cache=chosen.step_cache)
        return [KnownLatents(head[:, :, :1], "start"), KnownLatents(head[:, :, 1:], "end")]


class StepReporter:
    """Counts sampling steps over every pass of a call and hands each to the callbacks: ``callback(done, total,
    latents)`` (total: every pass's steps plus one for decoding) and diffusers' ``callback_on_step_end(pipe, step,
    t, {"latents": ...})``, whose returned latents replace the sampler's."""

    def __init__(self, pipe: KinemaPipeline, total: int, callback, callback_on_step_end) -> None:
        self.pipe, self.total, self.done = pipe, total, 0
        self.callback, self.on_step_end = callback, callback_on_step_end

    def pass_callback(self) -> Callable[[int, int, torch.Tensor], torch.Tensor | None]:
        def step(index: int, steps: int, latents: torch.Tensor, time: float = 0.0) -> torch.Tensor | None:
            self.done += 1
            replaced = None
            if self.on_step_end is not None:  # diffusers' timestep: the flow time reached, scaled to [0, 1000]
                timestep = torch.tensor(1000.0 * time, device=latents.device)
                outputs = self.on_step_end(self.pipe, self.done - 1, timestep, {"latents": latents}) or {}
                replaced = outputs.get("latents")
            if self.callback is not None:
                self.callback(min(self.done, self.total - 1), self.total, latents)
            return replaced

        return step


def convert_frames(frames: np.ndarray, output_type: str) -> Any:
    """uint8 frames (B, F, H, W, 3) as ``output_type`` asks: "np" as they are, "pil" a list of lists of images,
    "pt" float32 in [0, 1] shaped (B, F, 3, H, W) as diffusers' video processor gives."""
    if output_type == "pil":
        from PIL import Image

        return [[Image.fromarray(frame) for frame in video] for video in frames]
    if output_type == "pt":
        return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float().div(255.0)
    return frames


def check_generator(generator: Any, videos: int) -> None:
    """A call's ``generator``: None, a torch.Generator, or one for each of its ``videos`` (as diffusers asks)."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, list) or not all(isinstance(g, torch.Generator) for g in generator):
        raise KinemaError(f"generator must be a torch.Generator or a list of them (got {type(generator).__name__})")
    if len(generator) != videos:
        raise KinemaError(f"generator: a list of {len(generator)} for {videos} videos (give one for each video)")


def check_callbacks(**callbacks: Any) -> None:
    """One-line error for a callback that cannot be called, before any work starts."""
    for name, value in callbacks.items():
        if value is not None and not callable(value):
            raise KinemaError(f"{name} must be callable (got {type(value).__name__})")


def generator_seed(generator: torch.Generator | list[torch.Generator] | None) -> int:
    """The seed a generator (the first of a list) started from; 0 without one."""
    first = generator[0] if isinstance(generator, list) and generator else generator
    return int(first.initial_seed()) if isinstance(first, torch.Generator) else 0


def prompt_lists(prompt: str | list[str], negative_prompt: str | list[str] | None, default_negative: str = ""
                 ) -> tuple[list[str], list[str]]:
    """The prompts of a batch and one negative prompt for each (``default_negative`` when none is given)."""
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    negative = negative_prompt if negative_prompt is not None else default_negative
    negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
    if len(negatives) != len(prompts):
        raise KinemaError(f"negative_prompt: got {len(negatives)} for {len(prompts)} prompts")
    return prompts, negatives


def merged_halves(values: list[torch.Tensor | None]) -> torch.Tensor | None:
    """One text input (text, mask or image tokens) of guidance's halves, batched as ``guided`` batches them."""
    if values[0] is None:
        return None
    return values[0] if len(values) == 1 else torch.cat(values)


@contextlib.contextmanager
def step_caching(transformers: Sequence[VideoDiT], threshold: float) -> Iterator[None]:
    """diffusers' First-Block Cache on each transformer of a pass at ``threshold`` (0: only those with a cache on
    already, ``enable_cache``), each starting afresh, as diffusers' pipelines reset theirs after each call; those
    it turned on are turned off after."""
    own = [t for t in transformers if threshold > 0 and not t.is_cache_enabled]
    if own:
        from diffusers.hooks import FirstBlockCacheConfig

        for transformer in own:
            transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    for transformer in transformers:
        if transformer.is_cache_enabled:
            transformer._reset_stateful_cache()
    try:
        yield
    finally:
        for transformer in transformers:
            if any(transformer is t for t in own):
                transformer.disable_cache()
            elif transformer.is_cache_enabled:
                transformer._reset_stateful_cache()


def velocity_of(transformer: VideoDiT, before: Callable[[], None] | None = None,
                text: Callable[[], TextContext] | None = None) -> Callable[..., torch.Tensor]:
    """The sampler's ``model(x, t, text, text_mask, frame_text_index, cache, condition, image)`` for a transformer:
    the text's (and an image's) keys and values are computed once per run (the samplers pass the same objects at
    every step), or come from ``text()`` (called once, then the model takes no text arguments). ``before()`` runs
    first at every call (CPU offload puts the transformer on the device there).

    With step caching on the transformer (``enable_cache``) each call runs in its cache context, and the cache
    starts afresh for every frame of the frame cache and for every call whose keys and values it keeps."""
    prepared: list = []  # (text, mask, image, TextContext)
    cached_frames = [0]  # frames the frame cache held at the last call

    def context_for(text_states: torch.Tensor | None, text_mask: torch.Tensor | None,
                    image: torch.Tensor | None) -> TextContext:
        if text is not None:
            if not prepared:
                prepared[:] = [(None, None, None, text())]
        elif not prepared or any(a is not b for a, b in zip(prepared[0][:3], (text_states, text_mask, image))):
            context = transformer.prepare_text(text_states.to(transformer.dtype), text_mask,
                                               image=None if image is None else image.to(transformer.dtype))
            prepared[:] = [(text_states, text_mask, image, context)]
        return prepared[0][3]

    def model(x: torch.Tensor, t: torch.Tensor, text: torch.Tensor | None = None,
              text_mask: torch.Tensor | None = None, frame_text_index: torch.Tensor | None = None,
              cache: FrameCache | None = None, condition: torch.Tensor | None = None,
              image: torch.Tensor | None = None) -> torch.Tensor:
        if before is not None:
            before()
        context = context_for(text, text_mask, image)
        if cache is not None and frame_text_index is not None:  # x holds the frames after the cached ones
            frame_text_index = frame_text_index[:, cache.frames:cache.frames + x.shape[2]]
        if not transformer.is_cache_enabled:
            return transformer(x.to(transformer.dtype), t, context, frame_text_index=frame_text_index,
                               cache=cache, condition=condition).float()
        if cache is not None and (cache.committing or cache.frames != cached_frames[0]):
            transformer._reset_stateful_cache()  # a new frame, or keys and values to keep: every block runs
            cached_frames[0] = cache.frames
        with transformer.cache_context("denoise"):
            return transformer(x.to(transformer.dtype), t, context, frame_text_index=frame_text_index,
                               cache=cache, condition=condition).float()

    return model
