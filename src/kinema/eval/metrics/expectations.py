"""What a clip is expected to show: from a simulated scene's truth, or from a prompt's words."""

from __future__ import annotations

import numpy as np

from kinema.world.camera import camera_track
from kinema.world.scene import GRAVITY


def expectation_from_scene(scene, traj, aspect: float = 1.0) -> dict:
    """The ``expected`` dict of a simulator clip, from its scene spec and physics events.

    Each object also gets ``in_view``: whether the cameras (at this width / height) ever show at
    least half of it for two frames. A thrown-in object may still be falling above the view when
    the clip ends; metrics do not ask to see such an object.
    """
    camera = camera_track(scene, traj, aspect)  # (F, 4): cx, cy, view width, view height
    radii = np.array([o.radius for o in scene.objects])
    inside_x = np.clip(np.minimum(traj.x + radii, (camera[:, 0] + camera[:, 2] / 2)[:, None])
                       - np.maximum(traj.x - radii, (camera[:, 0] - camera[:, 2] / 2)[:, None]), 0, None)
    inside_y = np.clip(np.minimum(traj.y + radii, (camera[:, 1] + camera[:, 3] / 2)[:, None])
                       - np.maximum(traj.y - radii, (camera[:, 1] - camera[:, 3] / 2)[:, None]), 0, None)
    shown = traj.present & (inside_x * inside_y >= 0.5 * (2 * radii) ** 2)  # (F, N)
    return {
        "sky": scene.sky,
        "ground": scene.ground,
        "occluder": scene.occluder,
        "objects": [{"color": o.color, "shape": o.shape, "size": o.size, "material": o.material,
                     "paint": o.paint, "action": o.action, "in_view": bool(shown[:, n].sum() >= 2)}
                    for n, o in enumerate(scene.objects)],
        "shots": [{"start": s.start, "end": s.end, "framing": s.framing, "subject": s.subject}
                  for s in scene.shots],
        "fps": scene.fps,
        "gravity": scene.gravity,
        "events": [e.to_dict() for e in traj.events],
    }


def expectation_from_prompt(prompt: str, frames: int, fps: float) -> dict:
    """The ``expected`` dict for a prompt: what its words name (``kinema.world.caption.parse_prompt``),
    one shot over the whole clip."""
    from kinema.world.caption import parse_prompt

    parsed = parse_prompt(prompt)
    framing = parsed["framings"][0] if parsed["framings"] else None
    return {
        "sky": parsed["sky"], "ground": parsed["ground"], "occluder": parsed["occluder"],
        "objects": parsed["objects"],
        "shots": [{"start": 0, "end": frames, "framing": framing, "subject": 0 if parsed["objects"] else None}],
        "fps": fps, "gravity": GRAVITY, "events": [],
    }
