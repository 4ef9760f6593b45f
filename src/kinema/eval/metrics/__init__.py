"""Score a video's analysis against what its prompt or storyboard asked for.

``expected`` is a plain dict; every field may be missing or None when a prompt does not say:

    {"sky": "day", "ground": "sand", "occluder": "wall" | None,
     "objects": [{"color": "red", "shape": "ball", "size": "small", "material": "bouncy",
                  "paint": False, "action": "thrown_right"}, ...],
     "shots": [{"start": 0, "end": 17, "framing": "wide", "subject": 0}, ...],
     "fps": 8.0, "gravity": 9.81,
     "events": [{"frame": 12, "kind": "bounce", "objects": [0], "speed": 6.1}, ...]}

An object may also say ``"in_view": False`` (``expectation_from_scene`` sets it for objects the
cameras never show, such as one thrown in just before the end): then it may be missing.

``score_clip`` returns one number per metric: in [0, 1] with 1 best, except ``parabola_residual_px``
and ``color_drift`` (lower is better), ``gravity_estimate`` (m/s²) and the event counts; None where a
metric does not apply. The physics targets read ``parabola_fit`` (free-flight segments that fit a
parabola with the world's gravity), ``bounces``, ``rebound`` (heavy objects rebound lower than bouncy
ones), ``permanence_clean`` (1 when nothing vanishes or appears) and ``marks_kept`` (paint marks stay);
``marks_made`` is a diagnostic beside it (``CLIP_TARGETS``). ``attributes_object``, ``_size``,
``_count``, ``_sky`` and ``_ground`` split ``attributes`` by kind of check, and
``attributes_object_colour`` finds objects by colour alone (``attribute_checks``).
``expectation_from_scene`` builds ``expected`` for a simulator clip.
Static shots are the expected wide and medium ones, or where no framing is given, the shots whose
background the analyzer found still.

One measure per module: ``attributes``, ``motion``, ``bounces`` (and rebounds), ``flight`` (parabola and
gravity), ``marks``, ``permanence`` and ``consistency`` (colour drift, cross-shot); ``tracks`` holds what they
share, ``expectations`` builds ``expected``, and ``scores`` combines them into ``score_clip``, the targets and
the summary.
"""

from kinema.eval.metrics.attributes import ATTRIBUTE_CHECKS, attribute_checks, attribute_score
from kinema.eval.metrics.bounces import (
    BOUNCE_RISE_PX,
    BOUNCING_ACTIONS,
    MIN_DROP_PX,
    REBOUND_SPLIT,
    VISIBLE_BOUNCE_SPEED,
    bounce_in_rows,
    bounce_score,
    detect_bounces,
    expected_bouncers,
    rebound_score,
    rebounds,
)
from kinema.eval.metrics.consistency import (
    COLOR_DRIFT_LIMIT,
    COMPARABLE_SIZE,
    DRIFT_SECONDS,
    color_drift,
    cross_shot_score,
    shot_count_score,
)
from kinema.eval.metrics.expectations import expectation_from_prompt, expectation_from_scene
from kinema.eval.metrics.flight import (
    GRAVITY_TOLERANCE,
    GROUND_CLEARANCE_PX,
    KINK_PX,
    MIN_FLIGHT_FRAMES,
    PARABOLA_FIT_PX,
    flight_segments,
    gravity_fits,
    gravity_scores,
    parabola_fit_score,
)
from kinema.eval.metrics.marks import (
    MARK_KEPT_SHARE,
    MARK_SHADOW_METRES,
    MIN_MARK_FRAMES,
    mark_tracks,
    marks_kept_score,
    marks_made_score,
)
from kinema.eval.metrics.motion import DIRECTION_SECONDS, DIRECTIONS, MIN_SPEED_PX, motion_direction_score
from kinema.eval.metrics.permanence import MAX_GAP_FRAMES, permanence_events, permanence_score
from kinema.eval.metrics.scores import (
    CLIP_TARGETS,
    MIN_TARGET_CLIPS,
    clip_targets,
    format_clip_targets,
    score_clip,
    summarize,
)
from kinema.eval.metrics.tracks import MIN_TRACK_FRAMES, STATIC_FRAMINGS, majority, real_track, static_frames

__all__ = [
    "ATTRIBUTE_CHECKS", "BOUNCE_RISE_PX", "BOUNCING_ACTIONS", "CLIP_TARGETS", "COLOR_DRIFT_LIMIT",
    "COMPARABLE_SIZE", "DIRECTIONS", "DIRECTION_SECONDS", "DRIFT_SECONDS", "GRAVITY_TOLERANCE",
    "GROUND_CLEARANCE_PX", "KINK_PX", "MARK_KEPT_SHARE", "MARK_SHADOW_METRES", "MAX_GAP_FRAMES", "MIN_DROP_PX",
    "MIN_FLIGHT_FRAMES", "MIN_MARK_FRAMES", "MIN_SPEED_PX", "MIN_TARGET_CLIPS", "MIN_TRACK_FRAMES",
    "PARABOLA_FIT_PX", "REBOUND_SPLIT", "STATIC_FRAMINGS", "VISIBLE_BOUNCE_SPEED", "attribute_checks",
    "attribute_score", "bounce_in_rows", "bounce_score", "clip_targets", "color_drift", "cross_shot_score",
    "detect_bounces", "expectation_from_prompt", "expectation_from_scene", "expected_bouncers", "flight_segments",
    "format_clip_targets", "gravity_fits", "gravity_scores", "majority", "mark_tracks", "marks_kept_score",
    "marks_made_score", "motion_direction_score", "parabola_fit_score", "permanence_events", "permanence_score",
    "real_track", "rebound_score", "rebounds", "score_clip", "shot_count_score", "static_frames", "summarize",
]
