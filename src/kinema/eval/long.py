"""Measures for long videos and storyboards: 60-second stability, cross-shot consistency and
prompt adherence per shot. Every function takes uint8 frames (F, H, W, 3) plus what is known
about them (fps, the first frame of each shot, the prompts) and returns plain JSON-ready data.

**Stability** (``drift``, ``stability``) compares the first and the last ``window_seconds`` (10 s;
at most half the clip each) of a clip filmed in one framing:

- *Colour drift*, per channel R, G, B: each window is reduced to its per-pixel temporal median
  (moving objects drop out), the frame is cut into COLOR_BANDS horizontal bands (sky at the top,
  ground at the bottom), and in each band the change is the median over its pixels of
  (last - first), divided by the band's mean level in the first window (at least COLOR_FLOOR grey
  levels). The channel's drift is the largest |change| over the bands. A change of colour, tint,
  brightness or fading that covers most of a band shows in full; the world's own changes of
  content (an object thrown in, a paint mark, an object come to rest elsewhere) cover a small
  part of a band and do not count.
- *Sharpness drift*: sharpness is the re-blur ratio of the luma, pooled over the window's frames
  and both directions: sum(max(0, |D| - |D_b|)) / sum(|D|), with D the differences between
  neighbouring pixels and D_b the same after a REBLUR_TAPS-tap box blur along that direction
  (after Crete-Roffet et al. 2007, "The Blur Effect"). A crisp edge loses most of its variation
  when blurred again and a blurred one little, while the number of edges cancels out, so objects
  coming and going hardly move it. The drift is |last - first| / first.
- The objects' own colours are not in these numbers: ``score_clip``'s ``color_drift`` follows the
  analyzer's tracks from the start to the end of the clip.
- ``drift_max`` is the largest of the three colour drifts and the sharpness drift; the target is
  ``drift_max <= DRIFT_TARGET`` (5 %).
- ``stability`` adds object permanence over the whole clip: ``kinema.eval.metrics.permanence_score``
  of the analyzer's tracks (1 when nothing vanishes or appears mid-shot without the frame edge,
  the occluder or a thrown-in event to explain it).

**Window seams** (``window_seams``): a long video is made in passes (``kinema.inference.longvideo``), and where
one pass's frames meet the next's the picture may jump. The change between neighbouring frames at each
join is set against the change over the frames around it; ``seam_ratio`` 1 is an invisible join. The
joins follow from the window settings in the clip's metadata. No target; it shows what a setting that
lowers drift costs in continuity.

**Cross-shot consistency** (``cross_shot_consistency``) analyses each shot on its own (the shots
are given by their first frames; nothing is detected) and checks every cut, from shot k - 1 to
shot k:

- *scene kept*: the sky class and the ground class of shot k (each the majority over its frames)
  are those of the last shot before the cut that showed them (a close-up may show no ground);
- *subject kept*: the subject of shot k, in colour and shape, is in view in shot k (a track of at
  least MIN_SHOT_TRACK_FRAMES frames) and was in view in some shot before the cut. The subject is
  the one given per shot (from the storyboard's words, or a simulator clip's truth), else the
  object that covers the most pixels over shot k. A subject that changes colour or shape at the
  cut, or a scene that changes sky or ground, fails the cut, with the reason. So does a subject
  that is new at the cut (an object thrown in while another shot was on): nothing before the cut
  shows what it should look like.

``consistency`` is the fraction of cuts that keep both; the target is ``>= CONSISTENCY_TARGET``
(95 %).

**Adherence per shot** (``shot_adherence``) scores each shot's frames with
``kinema.eval.metrics.score_clip`` against ``parse_prompt`` of "scene prompt + framing + shot
prompt", one shot over the shot's frames. In a shot that is not wide, only the shot's subject
(the first object its own prompt names, else the first the scene names) must be in view; the other
objects may be missing. A close-up need not show the ground (its camera follows the subject up).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import numpy as np

from kinema.errors import KinemaError
from kinema.eval.analyzer import VideoAnalysis, analyze_video
from kinema.eval.metrics import expectation_from_prompt, majority, permanence_score, score_clip, summarize
from kinema.frames import shot_text

STABILITY_WINDOW_SECONDS = 10.0
LONG_SECONDS = 2 * STABILITY_WINDOW_SECONDS  # clips at least this long get stability scores
DRIFT_TARGET = 0.05
CONSISTENCY_TARGET = 0.95
COLOR_BANDS = 4
COLOR_FLOOR = 16.0  # grey levels: the smallest band level colour drift is relative to
REBLUR_TAPS = 9
SEAM_NEIGHBOURS = 4  # frame pairs on each side of a join that it is compared with
MIN_SHOT_TRACK_FRAMES = 2  # an object is in view in a shot when a track holds it this many frames
LUMA = np.array([0.299, 0.587, 0.114])
CHANNELS = ("r", "g", "b")

Look = tuple[str, str]  # (colour, shape)


def _check_frames(frames) -> np.ndarray:
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise KinemaError(f"frames must be uint8 of shape (F, H, W, 3) (got {array.dtype} {tuple(array.shape)})")
    return array


def _check_fps(fps: float) -> float:
    if not (isinstance(fps, (int, float)) and np.isfinite(fps) and fps > 0):
        raise KinemaError(f"fps must be a number > 0 (got {fps!r})")
    return float(fps)


def _check_starts(shot_starts: Sequence[int], frames: int) -> list[int]:
    starts = [int(s) for s in shot_starts]
    if not starts or starts[0] != 0:
        raise KinemaError(f"shot starts must begin with frame 0 (got {starts})")
    if any(b <= a for a, b in pairwise(starts)) or starts[-1] >= frames:
        raise KinemaError(f"shot starts must rise and stay below the frame count {frames} (got {starts})")
    return starts


# -- stability -----------------------------------------------------------------------------------


def _box_blur(image: np.ndarray, taps: int, axis: int) -> np.ndarray:
    """Mean over ``taps`` neighbours along ``axis`` (edges repeated), via a cumulative sum."""
    half = taps // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (half + 1, half)
    total = np.cumsum(np.pad(image, pad, mode="edge"), axis=axis)
    count = image.shape[axis]
    upper = np.take(total, np.arange(taps, taps + count), axis=axis)
    lower = np.take(total, np.arange(count), axis=axis)
    return (upper - lower) / taps


def sharpness(frames: np.ndarray) -> float:
    """The re-blur ratio of the frames' luma, in [0, 1]: higher is crisper (see the module docstring)."""
    frames = _check_frames(frames)
    kept = total = 0.0
    for start in range(0, len(frames), 8):  # a few frames at a time: memory stays small at any size
        luma = frames[start:start + 8].astype(np.float64) @ LUMA  # (f, H, W)
        for axis in (1, 2):
            difference = np.abs(np.diff(luma, axis=axis))
            reblurred = np.abs(np.diff(_box_blur(luma, REBLUR_TAPS, axis), axis=axis))
            kept += float(np.maximum(difference - reblurred, 0.0).sum())
            total += float(difference.sum())
    return kept / total if total > 0 else 0.0


def _window_frames(count: int, fps: float, window_seconds: float) -> int:
    if not (np.isfinite(window_seconds) and window_seconds > 0):
        raise KinemaError(f"window_seconds must be > 0 (got {window_seconds!r})")
    return max(1, min(int(round(window_seconds * fps)), count // 2))


def color_drift_per_channel(first: np.ndarray, last: np.ndarray) -> list[float]:
    """Per channel, the largest relative change over horizontal bands of the temporal-median images
    of two windows of frames (see the module docstring)."""
    first_median = np.median(_check_frames(first), axis=0)  # (H, W, 3)
    last_median = np.median(_check_frames(last), axis=0)
    if first_median.shape != last_median.shape:
        raise KinemaError(f"windows differ in size: {first_median.shape} and {last_median.shape}")
    worst = np.zeros(3)
    for rows in np.array_split(np.arange(first_median.shape[0]), COLOR_BANDS):
        if len(rows) == 0:
            continue
        change = np.median((last_median[rows] - first_median[rows]).reshape(-1, 3), axis=0)
        level = np.maximum(first_median[rows].reshape(-1, 3).mean(axis=0), COLOR_FLOOR)
        worst = np.maximum(worst, np.abs(change) / level)
    return [float(v) for v in worst]


def drift(frames: np.ndarray, fps: float, window_seconds: float = STABILITY_WINDOW_SECONDS) -> dict:
    """Colour and sharpness drift from the first to the last window of a clip (module docstring).

    Returns ``window_frames``, ``color_drift`` ({r, g, b}), ``color_drift_max``, ``sharpness_first``,
    ``sharpness_last``, ``sharpness_drift``, ``drift_max`` and ``within_target``
    (``drift_max <= DRIFT_TARGET``). A clip of fewer than two frames has nothing to compare: None.
    """
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    count = len(frames)
    window = _window_frames(count, fps, window_seconds)
    if count < 2:
        return {"window_frames": 0, "color_drift": None, "color_drift_max": None, "sharpness_first": None,
                "sharpness_last": None, "sharpness_drift": None, "drift_max": None, "within_target": None}
    first, last = frames[:window], frames[count - window:]
    colors = color_drift_per_channel(first, last)
    sharp_first, sharp_last = sharpness(first), sharpness(last)
    sharp_drift = abs(sharp_last - sharp_first) / sharp_first if sharp_first > 0 else float(sharp_last > 0)
    worst = max(*colors, sharp_drift)
    return {
        "window_frames": window,
        "color_drift": dict(zip(CHANNELS, colors)),
        "color_drift_max": max(colors),
        "sharpness_first": sharp_first,
        "sharpness_last": sharp_last,
        "sharpness_drift": sharp_drift,
        "drift_max": worst,
        "within_target": bool(worst <= DRIFT_TARGET),
    }


def stability(frames: np.ndarray, fps: float, window_seconds: float = STABILITY_WINDOW_SECONDS,
              analysis: VideoAnalysis | None = None, expected: dict | None = None) -> dict:
    """``drift`` plus object permanence over the whole clip: ``permanence``, ``vanish_events`` and
    ``spawn_events`` from ``metrics.permanence_score``. ``analysis`` is the clip's analysis (made here
    when not given); ``expected`` may list thrown-in events, which explain appearances."""
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    out = drift(frames, fps, window_seconds)
    if analysis is None:
        analysis = analyze_video(frames, fps)
    permanence, vanish, spawn = permanence_score(analysis, expected or {})
    return out | {"permanence": permanence, "vanish_events": vanish, "spawn_events": spawn}


def window_seams(frames: np.ndarray, window_starts: Sequence[int]) -> dict | None:
    """How visible the joins of a video made in passes are. The change between two neighbouring frames is
    their mean absolute difference (grey levels, over pixels and channels). ``seam_change`` is its mean
    from the frame before each pass's first new frame to that frame, ``around_change`` its mean over the
    SEAM_NEIGHBOURS frame pairs on either side of each join, and ``seam_ratio`` the first over the second:
    1 is a join nobody can find (motion that goes on across it counts on both sides); content that jumps,
    or a blur that changes, at the joins raises it. None with no joins inside the clip."""
    frames = _check_frames(frames)
    joins = sorted({int(s) for s in window_starts if 1 <= int(s) < len(frames)})
    if not joins:
        return None
    change = np.empty(len(frames) - 1)
    for start in range(0, len(frames) - 1, 32):  # a few frames at a time: memory stays small at any size
        chunk = frames[start:start + 33].astype(np.float32)
        change[start:start + len(chunk) - 1] = np.abs(np.diff(chunk, axis=0)).mean(axis=(1, 2, 3))
    pairs = {j - 1 for j in joins}  # change[i] is from frame i to frame i + 1
    around = []
    for i in sorted(pairs):
        near = [k for k in range(i - SEAM_NEIGHBOURS, i + SEAM_NEIGHBOURS + 1)
                if 0 <= k < len(change) and k not in pairs]
        if near:
            around.append(float(change[near].mean()))
    seam = float(change[sorted(pairs)].mean())
    around_change = float(np.mean(around)) if around else 0.0
    return {"joins": len(joins), "seam_change": seam, "around_change": around_change,
            "seam_ratio": seam / around_change if around_change > 0 else None}


# -- shots ---------------------------------------------------------------------------------------


def analyze_shots(frames: np.ndarray, shot_starts: Sequence[int], fps: float) -> list[VideoAnalysis]:
    """Each shot's frames analysed on their own."""
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    starts = _check_starts(shot_starts, len(frames))
    ends = starts[1:] + [len(frames)]
    return [analyze_video(frames[start:end], fps) for start, end in zip(starts, ends)]


def _looks(analysis: VideoAnalysis) -> dict[Look, float]:
    """(colour, shape) of each object in view in a shot, with the pixels it covers over the shot."""
    areas: dict[int, float] = {}
    for frame in analysis.frames:
        for det in frame.objects:
            areas[det.track] = areas.get(det.track, 0.0) + det.area
    out: dict[Look, float] = {}
    for track in analysis.tracks:
        if len(track.frames) >= MIN_SHOT_TRACK_FRAMES:
            out[track.key] = out.get(track.key, 0.0) + areas.get(track.id, 0.0)
    return out


def _name(look: Look) -> str:
    return f"{look[0]} {look[1]}"


def _shot_analyses(frames: np.ndarray, shot_starts: Sequence[int], fps: float,
                   analyses: Sequence[VideoAnalysis] | None) -> list[VideoAnalysis]:
    if analyses is None:
        return analyze_shots(frames, shot_starts, fps)
    frames = _check_frames(frames)
    starts = _check_starts(shot_starts, len(frames))
    if len(analyses) != len(starts):
        raise KinemaError(f"{len(analyses)} shot analyses for {len(starts)} shots")
    return list(analyses)


def cross_shot_consistency(frames: np.ndarray, shot_starts: Sequence[int], fps: float = 8.0,
                           subjects: Sequence[Look | None] | None = None,
                           analyses: Sequence[VideoAnalysis] | None = None) -> dict:
    """Whether each cut keeps the scene (sky, ground) and the subject's colour and shape.

    ``subjects``: per shot, the (colour, shape) the shot is about, or None to take the object that
    covers the most pixels. ``analyses``: per shot, from ``analyze_shots`` (made here when not
    given). Returns ``consistency`` (fraction of cuts that keep both; None without cuts),
    ``scene_kept`` and ``subject_kept`` (fractions), ``target`` and ``cuts``: one entry per cut with
    its frame, the two verdicts, ``kept`` and ``reason`` (empty when kept).
    """
    shots = _shot_analyses(frames, shot_starts, fps, analyses)
    starts = [int(s) for s in shot_starts]
    if subjects is not None and len(subjects) != len(starts):
        raise KinemaError(f"{len(subjects)} subjects for {len(starts)} shots")
    looks = [_looks(a) for a in shots]
    skies = [majority([f.sky for f in a.frames]) for a in shots]
    grounds = [majority([f.ground for f in a.frames]) for a in shots]
    cuts = []
    for k in range(1, len(shots)):
        reasons = []
        for name, classes in (("sky", skies), ("ground", grounds)):
            # A close-up may show no ground: compare with the last shot that showed some.
            before = next((c for c in reversed(classes[:k]) if c is not None), None)
            if None not in (before, classes[k]) and classes[k] != before:
                reasons.append(f"{name} {before} -> {classes[k]}")
        scene_kept = not reasons
        given = subjects[k] if subjects is not None else None
        subject = tuple(given) if given is not None else max(looks[k], key=looks[k].get, default=None)
        if subject is None:
            subject_reason = "no object in view after the cut"
        elif subject not in looks[k]:
            subject_reason = f"subject {_name(subject)} not in view after the cut"
        elif not any(subject in before for before in looks[:k]):
            subject_reason = f"subject {_name(subject)} not in view before the cut"
        else:
            subject_reason = ""
        cuts.append({"frame": starts[k], "subject": None if subject is None else _name(subject),
                     "scene_kept": scene_kept, "subject_kept": not subject_reason,
                     "kept": scene_kept and not subject_reason,
                     "reason": "; ".join(r for r in [*reasons, subject_reason] if r)})
    def fraction(key: str) -> float | None:
        return float(np.mean([c[key] for c in cuts])) if cuts else None

    return {"consistency": fraction("kept"), "scene_kept": fraction("scene_kept"),
            "subject_kept": fraction("subject_kept"), "target": CONSISTENCY_TARGET, "cuts": cuts}


# -- adherence per shot --------------------------------------------------------------------------


def _parse(text: str) -> dict:
    from kinema.world.caption import parse_prompt

    return parse_prompt(text)


def shot_subjects(shot_prompts: Sequence[str], scene_prompt: str = "") -> list[Look | None]:
    """The subject of each shot: the first object (colour, shape) its prompt names, else the first the
    scene prompt names, else None."""
    scene_objects = _parse(scene_prompt)["objects"] if scene_prompt.strip() else []
    out: list[Look | None] = []
    for prompt in shot_prompts:
        objects = _parse(prompt)["objects"] or scene_objects
        out.append((objects[0]["color"], objects[0]["shape"]) if objects else None)
    return out


def shot_expectation(scene_prompt: str, framing: str | None, shot_prompt: str, frames: int, fps: float) -> dict:
    """The metrics' ``expected`` dict for one shot: ``parse_prompt`` of ``shot_text`` over ``frames``,
    with the shot's subject; outside wide shots the objects other than the subject may be out of view."""
    expected = expectation_from_prompt(shot_text(scene_prompt, framing, shot_prompt), frames, fps)
    subject = shot_subjects([shot_prompt], scene_prompt)[0]
    keys = [(o["color"], o["shape"]) for o in expected["objects"]]
    index = keys.index(subject) if subject in keys else (0 if keys else None)
    shot = expected["shots"][0]
    shot["subject"] = index
    if framing is not None:
        shot["framing"] = framing
    if shot["framing"] not in (None, "wide"):
        for n, obj in enumerate(expected["objects"]):
            if n != index:
                obj["in_view"] = False
    if shot["framing"] == "closeup":
        expected["ground"] = None  # the camera follows its subject up, so the ground may be out of view
    return expected


def shot_adherence(frames: np.ndarray, shot_starts: Sequence[int], shot_prompts: Sequence[str], fps: float = 8.0,
                   scene_prompt: str = "", framings: Sequence[str | None] | None = None,
                   analyses: Sequence[VideoAnalysis] | None = None) -> dict:
    """Each shot scored against its own prompt plus the scene prompt (``shot_expectation``).

    Returns ``shots``: per shot its frames, the text it was scored against and every
    ``score_clip`` metric; ``attributes``: the mean attribute adherence over shots; ``summary``:
    the mean of each metric over shots.
    """
    shots = _shot_analyses(frames, shot_starts, fps, analyses)
    if len(shot_prompts) != len(shots):
        raise KinemaError(f"{len(shot_prompts)} shot prompts for {len(shots)} shots")
    framings = list(framings) if framings is not None else [None] * len(shots)
    if len(framings) != len(shots):
        raise KinemaError(f"{len(framings)} framings for {len(shots)} shots")
    starts = [int(s) for s in shot_starts]
    out = []
    for start, analysis, prompt, framing in zip(starts, shots, shot_prompts, framings):
        expected = shot_expectation(scene_prompt, framing, prompt, analysis.num_frames, analysis.fps)
        out.append({"start": start, "end": start + analysis.num_frames,
                    "prompt": shot_text(scene_prompt, framing, prompt), "scores": score_clip(analysis, expected)})
    summary = summarize([s["scores"] for s in out])
    return {"shots": out, "attributes": summary.get("attributes"), "summary": summary}


# -- whole clips, and a suite's pooled numbers ---------------------------------------------------


def score_long_clip(frames: np.ndarray, fps: float, prompt: str, analysis: VideoAnalysis | None = None,
                    window_starts: Sequence[int] | None = None) -> dict:
    """A one-prompt clip: ``scores`` (every ``score_clip`` metric against the prompt, plus
    ``stability_drift``, ``stability_color_drift`` and ``stability_sharpness_drift``) and, for a clip
    of at least LONG_SECONDS, ``stability`` (None for shorter clips). With ``window_starts`` (the
    frames where the passes that made it meet), ``stability`` has ``seams`` (``window_seams``) and
    ``scores`` has ``window_seam_ratio``."""
    frames = _check_frames(frames)
    fps = _check_fps(fps)
    if analysis is None:
        analysis = analyze_video(frames, fps)
    expected = expectation_from_prompt(prompt, len(frames), fps)
    scores = score_clip(analysis, expected)
    if (len(frames) - 1) / fps < LONG_SECONDS:
        return {"scores": scores, "stability": None}
    measured = stability(frames, fps, analysis=analysis, expected=expected)
    scores |= {"stability_drift": measured["drift_max"], "stability_color_drift": measured["color_drift_max"],
               "stability_sharpness_drift": measured["sharpness_drift"]}
    if window_starts is not None:
        measured["seams"] = window_seams(frames, window_starts)
        scores["window_seam_ratio"] = measured["seams"]["seam_ratio"] if measured["seams"] else None
    return {"scores": scores, "stability": measured}


def score_storyboard_clip(frames: np.ndarray, fps: float, shot_starts: Sequence[int], shot_prompts: Sequence[str],
                          framings: Sequence[str | None] | None = None, scene_prompt: str = "") -> dict:
    """A storyboard clip, each shot analysed once: ``cross_shot`` (``cross_shot_consistency`` with each
    shot's subject from its words), ``shots`` (``shot_adherence``) and ``scores``: the mean over shots of
    each ``score_clip`` metric, with ``cross_shot_consistency``, ``scene_kept`` and ``subject_kept`` from
    the cuts (``shot_count`` is left out: shots are given, not detected)."""
    analyses = analyze_shots(frames, shot_starts, fps)
    subjects = shot_subjects(shot_prompts, scene_prompt)
    cross = cross_shot_consistency(frames, shot_starts, fps, subjects=subjects, analyses=analyses)
    for k, cut in enumerate(cross["cuts"], start=1):  # the framing each cut goes to
        cut["framing"] = framings[k] if framings is not None and k < len(framings) else None
    adherence = shot_adherence(frames, shot_starts, shot_prompts, fps, scene_prompt, framings, analyses=analyses)
    scores = {k: v for k, v in adherence["summary"].items() if k not in ("clips", "shot_count")}
    scores |= {"cross_shot_consistency": cross["consistency"], "scene_kept": cross["scene_kept"],
               "subject_kept": cross["subject_kept"]}
    return {"scores": scores, "cross_shot": cross, "shots": adherence["shots"]}


def suite_targets(clips: Sequence[dict]) -> dict:
    """The long-video measures of a suite's clips (as ``run_suite`` records them), pooled and set
    against their targets: cross-shot consistency over every cut of every storyboard clip, drift over
    the long clips (mean, worst, and the fraction within DRIFT_TARGET), permanence over the long
    clips, window seams (the mean ``seam_ratio``) and attribute adherence over every shot."""
    cuts = [cut for clip in clips if clip.get("cross_shot") for cut in clip["cross_shot"]["cuts"]]
    long_clips = [clip["stability"] for clip in clips if clip.get("stability")]
    drifts = [s["drift_max"] for s in long_clips if s["drift_max"] is not None]
    permanence = [s["permanence"] for s in long_clips if s["permanence"] is not None]
    shot_attributes = [shot["scores"]["attributes"] for clip in clips for shot in clip.get("shots") or []
                       if shot["scores"].get("attributes") is not None]
    seams = [s["seams"]["seam_ratio"] for s in long_clips if (s.get("seams") or {}).get("seam_ratio") is not None]
    consistency = float(np.mean([c["kept"] for c in cuts])) if cuts else None
    by_framing = {}  # the cuts pooled by the framing they go to (a close-up shows least of the scene)
    for framing in sorted({c["framing"] for c in cuts if c.get("framing")}):
        these = [c for c in cuts if c.get("framing") == framing]
        by_framing[framing] = {"cuts": len(these), "kept": float(np.mean([c["kept"] for c in these])),
                               "scene_kept": float(np.mean([c["scene_kept"] for c in these])),
                               "subject_kept": float(np.mean([c["subject_kept"] for c in these]))}
    return {
        "cross_shot_consistency": None if consistency is None else {
            "value": consistency, "cuts": len(cuts), "target": CONSISTENCY_TARGET,
            "scene_kept": float(np.mean([c["scene_kept"] for c in cuts])),
            "subject_kept": float(np.mean([c["subject_kept"] for c in cuts])),
            "by_framing": by_framing, "met": consistency >= CONSISTENCY_TARGET},
        "drift": None if not drifts else {
            "mean": float(np.mean(drifts)), "worst": float(max(drifts)), "clips": len(drifts),
            "within_target": float(np.mean([d <= DRIFT_TARGET for d in drifts])), "target": DRIFT_TARGET,
            "color_mean": float(np.mean([s["color_drift_max"] for s in long_clips])),
            "sharpness_mean": float(np.mean([s["sharpness_drift"] for s in long_clips])),
            "met": max(drifts) <= DRIFT_TARGET},
        "permanence": float(np.mean(permanence)) if permanence else None,
        "window_seam_ratio": float(np.mean(seams)) if seams else None,
        "shot_attributes": float(np.mean(shot_attributes)) if shot_attributes else None,
    }


def format_targets(targets: dict) -> str:
    """The pooled long-video measures as lines of text, each with its target ('' when none apply)."""
    lines = []
    cross = targets.get("cross_shot_consistency")
    if cross:
        lines.append(f"cross-shot consistency {cross['value']:.3f} over {cross['cuts']} cuts "
                     f"(scene {cross['scene_kept']:.3f}, subject {cross['subject_kept']:.3f}); "
                     f"target >= {cross['target']:.2f}: {'met' if cross['met'] else 'NOT met'}")
        if cross.get("by_framing"):
            lines.append("  by the framing cut to: " + "; ".join(
                f"{name} {part['kept']:.3f} of {part['cuts']} (scene {part['scene_kept']:.3f}, subject "
                f"{part['subject_kept']:.3f})" for name, part in cross["by_framing"].items()))
    if targets.get("shot_attributes") is not None:
        lines.append(f"adherence per shot (attributes) {targets['shot_attributes']:.3f}")
    drift_info = targets.get("drift")
    if drift_info:
        lines.append(f"drift first vs last 10 s: mean {drift_info['mean']:.3f} (colour {drift_info['color_mean']:.3f}, "
                     f"sharpness {drift_info['sharpness_mean']:.3f}), worst {drift_info['worst']:.3f}, "
                     f"{drift_info['within_target']:.0%} of {drift_info['clips']} clips within; "
                     f"target <= {drift_info['target']:.2f}: {'met' if drift_info['met'] else 'NOT met'}")
    if targets.get("permanence") is not None:
        lines.append(f"permanence over the long clips {targets['permanence']:.3f}")
    if targets.get("window_seam_ratio") is not None:
        lines.append(f"window seams: the change across a join is {targets['window_seam_ratio']:.2f}x the change "
                     "between the frames around it (1: invisible)")
    return "\n".join(lines)
