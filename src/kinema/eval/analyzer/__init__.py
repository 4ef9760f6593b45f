"""Find, measure and track the objects of the simulated world in any video.

The analyzer knows the world's palette and geometry (``kinema.world.palette``, ``kinema.world.scene``)
but nothing about how a video was made, so it reads simulator clips, H.264 round trips and the
output of a generative model alike. Per frame it:

1. classifies the scene: the (sky, ground) pair whose background colours, together with the object
   colours, explain the frame's pixels best;
2. finds the ground surface, to a fraction of a pixel, as the top of the band of ground rows;
3. finds the stage posts and the occluder; the post spacing (else the occluder's or a post's
   width) gives the scale in pixels per metre, else the wide framing's scale is assumed;
4. explains every pixel as a blend ``alpha * object + (1 - alpha) * partner`` of an object colour
   and a background (or other object) colour, labels the confident cores (alpha >= 0.5) into
   components and drops compression halos;
5. measures each component's coverage in luma-weighted YCbCr (H.264 halves chroma resolution and
   smears it across edges; luma stays sharp), against the palette and the background seen right
   beside the object, and from that coverage: the centroid, the size, and the shape, read from
   E[dx² dy²] / (E[dx²] E[dy²]), which is exactly 1 for an axis-aligned square under any
   separable blur and well below 1 for a disc;
6. reads paint marks from the ground band just below the surface.

Over the whole video it detects cuts (the background jumps once camera motion is undone), links
objects into tracks within each shot, joins them across cuts by colour and shape, and summarises
each shot (scene classes, scale, whether the camera holds still, objects seen).

One concern per module: ``palette`` (steps 1 and 4), ``stage`` (2 and 3), ``segmentation`` (components and
masks), ``objects`` (5), ``marks`` (6), ``frame`` (one frame, every step), ``cuts``, ``tracks`` and ``video``
(the whole video), and ``results``, what it reports.
"""

from kinema.eval.analyzer.cuts import (
    CUT_MIN_JUMP,
    CUT_MIN_JUMP_WITH_EVIDENCE,
    CUT_NOISE,
    CUT_RATIO,
    CUT_RATIO_WITH_EVIDENCE,
    CUT_SHIFT,
    CUT_SIZE_RATIO,
    background_motion,
    detect_cuts,
)
from kinema.eval.analyzer.frame import analyze_frame
from kinema.eval.analyzer.marks import (
    BARE_GROUND_DISTANCE,
    MARK_BAND_DEPTH,
    MARK_LUMA_AGREEMENT,
    MARK_MIN_DEPTH,
    MARK_MIN_WIDTH,
    MARK_PEAK,
    MARK_PEAK_BLACK,
    MIN_MARK_AREA,
)
from kinema.eval.analyzer.objects import (
    DEEP_ALPHA,
    LOCAL_PARTNER_PREFERENCE,
    MAX_OBJECT_FRACTION,
    MIN_DEEP_OBJECT,
    MIN_OBJECT_AREA,
    SHAPE_ALPHA_FLOOR,
    SHAPE_INDEPENDENCE_THRESHOLD,
    SIZE_BOUNDS,
    size_class,
    wide_scale,
)
from kinema.eval.analyzer.palette import (
    CANDIDATE_RESIDUAL,
    CORE_ALPHA,
    EDGE_CHROMA_WEIGHT,
    EDGE_SPACE,
    OBJECT_NAMES,
    OBJECT_RESIDUAL,
    OBJECT_RGB,
    SHADES,
    Palette,
    classify_scene,
    palette,
)
from kinema.eval.analyzer.results import (
    FrameAnalysis,
    MarkDetection,
    ObjectDetection,
    ShotSummary,
    Track,
    VideoAnalysis,
)
from kinema.eval.analyzer.segmentation import label_components
from kinema.eval.analyzer.stage import POST_WIDTH_FRACTION
from kinema.eval.analyzer.video import analyze_file, analyze_video

__all__ = [
    "BARE_GROUND_DISTANCE", "CANDIDATE_RESIDUAL", "CORE_ALPHA", "CUT_MIN_JUMP", "CUT_MIN_JUMP_WITH_EVIDENCE",
    "CUT_NOISE", "CUT_RATIO", "CUT_RATIO_WITH_EVIDENCE", "CUT_SHIFT", "CUT_SIZE_RATIO", "DEEP_ALPHA",
    "EDGE_CHROMA_WEIGHT", "EDGE_SPACE", "LOCAL_PARTNER_PREFERENCE", "MARK_BAND_DEPTH", "MARK_LUMA_AGREEMENT",
    "MARK_MIN_DEPTH", "MARK_MIN_WIDTH", "MARK_PEAK", "MARK_PEAK_BLACK", "MAX_OBJECT_FRACTION", "MIN_DEEP_OBJECT",
    "MIN_MARK_AREA", "MIN_OBJECT_AREA", "OBJECT_NAMES", "OBJECT_RESIDUAL", "OBJECT_RGB", "POST_WIDTH_FRACTION",
    "SHADES", "SHAPE_ALPHA_FLOOR", "SHAPE_INDEPENDENCE_THRESHOLD", "SIZE_BOUNDS", "FrameAnalysis",
    "MarkDetection", "ObjectDetection", "Palette", "ShotSummary", "Track", "VideoAnalysis", "analyze_file",
    "analyze_frame", "analyze_video", "background_motion", "classify_scene", "detect_cuts", "label_components",
    "palette", "size_class", "wide_scale",
]
