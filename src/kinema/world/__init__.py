"""The simulated world: a seeded, deterministic side view of a stage with physics, cameras,
captions and exact ground truth. It is the default model's training data and its test bench."""

from kinema.world.caption import Captions, caption_clip, parse_prompt, vocab_text
from kinema.world.dataset import Clip, make_clip, make_dataset, read_manifest, stream_clips
from kinema.world.physics import Trajectory, simulate
from kinema.world.render import render
from kinema.world.scene import SceneOptions, SceneSpec, frames_for_seconds, sample_scene

__all__ = [
    "Captions", "Clip", "SceneOptions", "SceneSpec", "Trajectory", "caption_clip", "frames_for_seconds",
    "make_clip", "make_dataset", "parse_prompt", "read_manifest", "render", "sample_scene", "simulate",
    "stream_clips", "vocab_text",
]
