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
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from kinema.eval.analyzer import ObjectDetection, Track, VideoAnalysis, wide_scale
from kinema.world.camera import ZOOM, camera_track
from kinema.world.scene import GRAVITY, MATERIALS

STATIC_FRAMINGS = ("wide", "medium")
DIRECTIONS = {"thrown_left": -1, "rolls_left": -1, "thrown_right": 1, "rolls_right": 1}
BOUNCING_ACTIONS = ("dropped", "thrown_left", "thrown_right", "tossed", "thrown_in")
MIN_TRACK_FRAMES = 3  # shorter tracks are detector noise, not objects
DIRECTION_SECONDS = 0.75  # motion direction is read over this long after the action starts
MIN_SPEED_PX = 0.2  # px per frame; slower counts as not moving
BOUNCE_RISE_PX = 0.3  # a bounce falls and then rises by at least this much
VISIBLE_BOUNCE_SPEED = 2.5  # m/s upward after impact: the bounce lasts about four frames at 8 fps
MIN_FLIGHT_FRAMES = 5
KINK_PX = 0.5  # a jump in the second difference of row this big splits a flight
GROUND_CLEARANCE_PX = 0.5  # plus a quarter radius: closer to the ground, small hops hide between frames
GRAVITY_TOLERANCE = 0.15
PARABOLA_FIT_PX = 1.0  # a free-flight segment fits a parabola when its RMS residual is this small at 64x64
REBOUND_SPLIT = float(np.sqrt(MATERIALS["bouncy"] ** 2 * MATERIALS["heavy"] ** 2))  # rebound / drop height
MIN_DROP_PX = 3.0  # a drop this high (px) or more makes a rebound ratio worth reading
MARK_KEPT_SHARE = 0.8  # a mark is kept when seen in this share of its shot's frames after it appears
MIN_MARK_FRAMES = 2  # a mark must be seen in this many consecutive frames to count as made
MARK_SHADOW_METRES = 1.5  # an object this close above the ground shades the marks beneath it
MAX_GAP_FRAMES = 1  # a track may miss this many frames in a row without counting as vanishing
COLOR_DRIFT_LIMIT = 0.05
COMPARABLE_SIZE = 1.3  # a track's colour is compared between views whose sizes differ less than this
DRIFT_SECONDS = 10.0  # colour drift compares the first and last this many seconds (or quarters)


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


# -- shared helpers ------------------------------------------------------------------------------


def _framing_of_frames(analysis: VideoAnalysis, expected: dict) -> list[str | None]:
    """The expected framing of every frame (None where the expectation names none)."""
    framing: list[str | None] = [None] * analysis.num_frames
    for shot in expected.get("shots") or []:
        for f in range(max(0, int(shot["start"])), min(analysis.num_frames, int(shot["end"]))):
            framing[f] = shot.get("framing")
    return framing


def _static_frames(analysis: VideoAnalysis, expected: dict) -> np.ndarray:
    """(F,) bool: the camera holds still. From the expected framings where given, else measured."""
    static = np.zeros(analysis.num_frames, bool)
    for shot in analysis.shots:
        static[shot.start:shot.end] = shot.static
    for f, framing in enumerate(_framing_of_frames(analysis, expected)):
        if framing is not None:
            static[f] = framing in STATIC_FRAMINGS
    return static


def _shot_index(analysis: VideoAnalysis, expected: dict, frame: int) -> int:
    """The shot that holds ``frame``: from the expected shots where given, else the detected ones."""
    for n, shot in enumerate(expected.get("shots") or []):
        if int(shot["start"]) <= frame < int(shot["end"]):
            return n
    return analysis.shot_of(frame)


def _scale_at(analysis: VideoAnalysis, expected_framing: str | None, frame: int) -> float | None:
    """Pixels per metre: measured by the analyzer, else implied by the expected framing, else None."""
    info = analysis.frames[frame]
    if info.scale_known:
        return info.scale
    if expected_framing in ZOOM:
        return wide_scale(analysis.width, analysis.height) / ZOOM[expected_framing]
    return None


def _real(analysis: VideoAnalysis, track: Track) -> bool:
    """Seen long enough to be an object, or cut short by the clip's start or end and seen without a break from
    there (two lone detections a few frames apart are noise, not an object)."""
    frames, last = track.frames, analysis.num_frames - 1
    unbroken = frames[-1] - frames[0] == len(frames) - 1
    return len(frames) >= MIN_TRACK_FRAMES or (unbroken and (frames[0] == 0 or frames[-1] == last))


def _tracks_of(analysis: VideoAnalysis, color: str | None, shape: str | None) -> list[Track]:
    return [t for t in analysis.tracks
            if _real(analysis, t) and t.color == color and (shape is None or t.shape == shape)]


def _detection(analysis: VideoAnalysis, track: Track, frame: int) -> ObjectDetection | None:
    return next((d for d in analysis.frames[frame].objects if d.track == track.id), None)


def _runs(analysis: VideoAnalysis, frames: list[int], keep: np.ndarray) -> list[list[int]]:
    """Split sorted frames into runs of consecutive frames that ``keep`` allows, within one shot."""
    runs: list[list[int]] = []
    for f in frames:
        if not keep[f]:
            continue
        if runs and f == runs[-1][-1] + 1 and analysis.shot_of(f) == analysis.shot_of(runs[-1][-1]):
            runs[-1].append(f)
        else:
            runs.append([f])
    return runs


def _majority(values: list):
    values = [v for v in values if v is not None]
    if not values:
        return None
    names, counts = np.unique(np.array(values, dtype=object), return_counts=True)
    return names[int(np.argmax(counts))]


# -- metrics -------------------------------------------------------------------------------------


ATTRIBUTE_CHECKS = ("object", "size", "count", "sky", "ground")


def attribute_checks(analysis: VideoAnalysis, expected: dict) -> dict[str, list[bool]]:
    """Each attribute check, by kind (``ATTRIBUTE_CHECKS``), as a list of pass/fail.

    ``object``: each expected object is found (a track of its colour and shape); ``size``: its size class
    where it can be measured (clean detections in wide shots with a measured scale); ``count``: the number
    of distinct colour and shape tracks equals the number of expected objects (thrown-in ones included;
    objects marked ``in_view: False`` may be missing); ``sky`` and ``ground``: the majority over frames.
    A diagnostic outside the score, ``object_colour``: a track of each expected object's colour, of any
    shape (an object found by colour but not by shape lost its shape).
    """
    checks: dict[str, list[bool]] = {name: [] for name in (*ATTRIBUTE_CHECKS, "object_colour")}
    objects = expected.get("objects") or []
    framing = _framing_of_frames(analysis, expected)
    for obj in objects:
        tracks = _tracks_of(analysis, obj.get("color"), obj.get("shape"))
        if not tracks and obj.get("in_view") is False:
            continue  # never in view, so not seeing it is right
        checks["object"].append(bool(tracks))
        checks["object_colour"].append(bool(_tracks_of(analysis, obj.get("color"), None)))
        if tracks and obj.get("size"):
            sizes = [d.size for t in tracks for f in t.frames
                     if (d := _detection(analysis, t, f)) is not None and d.clean and framing[f] == "wide"
                     and analysis.frames[f].scale_known]
            if sizes:
                checks["size"].append(_majority(sizes) == obj["size"])
    if objects:
        keys = {t.key for t in analysis.tracks if _real(analysis, t)}
        shown = sum(1 for o in objects if o.get("in_view") is not False)
        checks["count"].append(shown <= len(keys) <= len(objects))
    for name in ("sky", "ground"):
        if expected.get(name):
            checks[name].append(_majority([getattr(f, name) for f in analysis.frames]) == expected[name])
    return checks


def _pass_rate(checks: list[bool]) -> float | None:
    return float(np.mean(checks)) if checks else None


def _attribute_rate(checks: dict[str, list[bool]]) -> float | None:
    """The fraction of ``attribute_checks`` that pass, all kinds pooled (the ``object_colour`` diagnostic aside)."""
    return _pass_rate([ok for name in ATTRIBUTE_CHECKS for ok in checks[name]])


def attribute_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Attribute adherence: the fraction of ``attribute_checks`` that pass (the ``object_colour``
    diagnostic aside)."""
    return _attribute_rate(attribute_checks(analysis, expected))


def _direction(analysis: VideoAnalysis, tracks: list[Track], start: int, end: int, static: np.ndarray) -> int | None:
    """Sign of the horizontal motion over frames [start, end) within the static shot of ``start``."""
    shot = analysis.shot_of(start)
    for track in tracks:
        points = [(f, c) for f, c, s in zip(track.frames, track.col, track.shots)
                  if start <= f < end and s == shot and static[f]]
        points = [(f, c) for f, c in points if not _detection(analysis, track, f).touches_border]
        if len(points) >= 2 and points[-1][0] > points[0][0]:
            frames, cols = np.array(points, dtype=float).T
            slope = float(np.polyfit(frames, cols, 1)[0])
            return 0 if abs(slope) < MIN_SPEED_PX else int(np.sign(slope))
    return None


def motion_direction_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Motion direction: for objects thrown or rolled left or right (at the start of the clip, or by
    a later event), the sign of their horizontal motion in the first frames after, in static shots,
    matches. Not moving counts as wrong."""
    static = _static_frames(analysis, expected)
    objects = expected.get("objects") or []
    starts: list[tuple[int, int, int]] = []  # (object index, frame, wanted sign)
    for i, obj in enumerate(objects):
        if obj.get("action") in DIRECTIONS:
            starts.append((i, 0, DIRECTIONS[obj["action"]]))
    for event in expected.get("events") or []:
        if event.get("kind") in DIRECTIONS and len(event.get("objects") or []) == 1:
            starts.append((int(event["objects"][0]), int(event["frame"]), DIRECTIONS[event["kind"]]))
    # Motion read after a hit would not be the action's: stop at the object's next collision or wall.
    hits = [(int(e["frame"]), set(e.get("objects") or [])) for e in expected.get("events") or []
            if e.get("kind") in ("collision", "wall")]
    checks = []
    for i, frame, wanted in starts:
        if not (0 <= i < len(objects)) or not (0 <= frame < analysis.num_frames) or not static[frame]:
            continue
        tracks = _tracks_of(analysis, objects[i].get("color"), objects[i].get("shape"))
        if not tracks:
            checks.append(False)
            continue
        end = frame + max(2, int(round(DIRECTION_SECONDS * analysis.fps)) + 1)
        end = min([end] + [h + 1 for h, ids in hits if i in ids and h >= frame])
        seen = _direction(analysis, tracks, frame, end, static)
        if seen is not None:
            checks.append(seen == wanted)
    return float(np.mean(checks)) if checks else None


def detect_bounces(analysis: VideoAnalysis, track: Track, static: np.ndarray) -> list[dict]:
    """Bounces of a track in static shots: the object falls (row grows) and then rises.

    The contact happens between samples, so the lowest sample may sit up to a frame's travel above
    the ground. A bounce is ``at_ground`` when the bottom at its lowest sample is no more than that
    (plus a tolerance) above the ground row and no more than the tolerance below it; ``at_object``
    when another object touches it.
    """
    out = []
    rows_of = dict(zip(track.frames, track.row))
    radius_of = dict(zip(track.frames, track.radius_px))
    for run in _runs(analysis, track.frames, static):
        rows = np.array([rows_of[f] for f in run])
        for k in range(1, len(run) - 1):
            fall, rise = rows[k] - rows[k - 1], rows[k] - rows[k + 1]
            if fall < BOUNCE_RISE_PX or rise < BOUNCE_RISE_PX:
                continue
            f = run[k]
            radius = radius_of[f]
            bottom = rows[k] + radius
            ground = analysis.frames[f].ground_row
            tolerance = max(1.0, 0.3 * radius)
            at_ground = None if ground is None else -tolerance <= ground - bottom <= tolerance + max(fall, rise)
            here = _detection(analysis, track, f)
            at_object = here is not None and any(
                other.track != track.id
                and np.hypot(other.col - here.col, other.row - here.row) <= 1.3 * (other.radius_px + radius)
                for other in analysis.frames[f].objects)
            out.append({"frame": f, "bottom": bottom, "ground_row": ground, "at_ground": at_ground,
                        "at_object": at_object})
    return out


def bounce_in_rows(rows: np.ndarray, frame: int) -> bool:
    """Whether an object's true rows (one per frame, NaN where it is out of sight) show a bounce about
    ``frame`` that ``detect_bounces`` could see: a sample in frames ``frame - 1`` to ``frame + 2`` that
    the object falls into and rises out of by BOUNCE_RISE_PX each. A bounce whose rebound is swallowed
    (another object lands on top, or a heavy one barely lifts between two samples) shows none."""
    for k in range(max(1, frame - 1), min(len(rows) - 1, frame + 3)):
        fall, rise = rows[k] - rows[k - 1], rows[k] - rows[k + 1]
        if fall >= BOUNCE_RISE_PX and rise >= BOUNCE_RISE_PX:
            return True
    return False


def _expected_bouncers(analysis: VideoAnalysis, expected: dict, static: np.ndarray) -> set[int]:
    """Objects that should be seen bouncing: with a bounce event that is high enough to see, in a
    static shot, and where the object is in view around it (when events are given; an event marked
    ``visible: False``, from the clip's ground truth, shows no bounce to see); else those whose action
    makes them fall."""
    objects = expected.get("objects") or []
    events = expected.get("events")
    if events is None:
        return {i for i, o in enumerate(objects) if o.get("action") in BOUNCING_ACTIONS}
    out = set()
    for event in events:
        ids = event.get("objects") or []
        if event.get("kind") != "bounce" or len(ids) != 1 or not (0 <= ids[0] < len(objects)) \
                or event.get("visible") is False:
            continue
        frame = int(event["frame"])
        restitution = MATERIALS.get(objects[ids[0]].get("material"), 0.8)
        rebound = float(event.get("speed", VISIBLE_BOUNCE_SPEED / restitution)) * restitution
        window = range(frame - 1, frame + 3)  # the bounce happens between frames `frame` and `frame + 1`
        inside = window[0] >= 0 and window[-1] < analysis.num_frames
        if not (rebound >= VISIBLE_BOUNCE_SPEED and inside and all(static[f] for f in window)
                and len({_shot_index(analysis, expected, f) for f in window}) == 1):
            continue
        tracks = _tracks_of(analysis, objects[ids[0]].get("color"), objects[ids[0]].get("shape"))
        seen = {f for t in tracks for f, clean in zip(t.frames, t.clean) if clean}
        if len(seen & set(window)) >= 3:
            out.add(ids[0])
    return out


def bounce_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Bounces at the ground: 0 if an object that should bounce is never seen bouncing; otherwise
    the fraction of detected bounces (falling, then rising) that happen with the object's bottom at
    the ground row or against another object. None when nothing bounces or should."""
    static = _static_frames(analysis, expected)
    objects = expected.get("objects") or []
    for i in _expected_bouncers(analysis, expected, static):
        tracks = _tracks_of(analysis, objects[i].get("color"), objects[i].get("shape"))
        if not any(detect_bounces(analysis, t, static) for t in tracks):
            return 0.0
    verdicts = []
    for track in analysis.tracks:
        for bounce in detect_bounces(analysis, track, static):
            if bounce["at_object"]:
                verdicts.append(True)
            elif bounce["at_ground"] is not None:
                verdicts.append(bool(bounce["at_ground"]))
    return float(np.mean(verdicts)) if verdicts else None


def flight_segments(analysis: VideoAnalysis, track: Track, static: np.ndarray) -> list[list[int]]:
    """Runs of at least MIN_FLIGHT_FRAMES consecutive frames of free flight in static shots: fully
    visible, clear of the ground and of other objects, split at bounces, and moving vertically."""
    rows_of = dict(zip(track.frames, track.row))
    keep = np.zeros(analysis.num_frames, bool)
    for f, row, radius in zip(track.frames, track.row, track.radius_px):
        det = _detection(analysis, track, f)
        ground = analysis.frames[f].ground_row
        clear_of_ground = ground is None or row + radius < ground - GROUND_CLEARANCE_PX - 0.25 * radius
        alone = det is not None and not any(
            o.track != track.id and np.hypot(o.col - det.col, o.row - det.row) <= 1.2 * (o.radius_px + radius)
            for o in analysis.frames[f].objects)
        keep[f] = static[f] and det is not None and det.clean and clear_of_ground and alone
    segments = []
    for run in _runs(analysis, track.frames, keep):
        rows = np.array([rows_of[f] for f in run])
        # A reversal from falling to rising is a bounce (or a hit) between samples: that frame may
        # lie on either side of it, so it joins neither piece. So does a kink, where the second
        # difference (constant in free flight) jumps: a collision in mid-air.
        turns = [k for k in range(1, len(run) - 1) if rows[k] > rows[k - 1] and rows[k] > rows[k + 1]]
        if len(run) >= 3:
            curvature = rows[2:] - 2 * rows[1:-1] + rows[:-2]
            typical = float(np.median(curvature))
            turns += [k + 1 for k, c in enumerate(curvature) if abs(c - typical) > KINK_PX + 0.25 * abs(typical)]
            turns = sorted(set(turns))
        bounds = [-1] + turns + [len(run)]
        segments += [run[a + 1:b] for a, b in pairwise(bounds)]
    return [s for s in segments if len(s) >= MIN_FLIGHT_FRAMES and np.ptp([rows_of[f] for f in s]) >= 2.0]


def gravity_fits(analysis: VideoAnalysis, expected: dict) -> list[dict]:
    """A parabola row = a t² + b t + c per free-flight segment: its RMS residual (px) and the
    gravity it implies, g = 2 a fps² / scale (m/s², positive = down), where the scale is known."""
    static = _static_frames(analysis, expected)
    framing = _framing_of_frames(analysis, expected)
    fits = []
    for track in analysis.tracks:
        rows_of = dict(zip(track.frames, track.row))
        for segment in flight_segments(analysis, track, static):
            t = np.array(segment, float) - segment[0]
            rows = np.array([rows_of[f] for f in segment])
            coefficients = np.polyfit(t, rows, 2)
            residual = float(np.sqrt(np.mean((np.polyval(coefficients, t) - rows) ** 2)))
            scale = _scale_at(analysis, framing[segment[0]], segment[0])
            g = None if scale is None else float(2.0 * coefficients[0] * analysis.fps ** 2 / scale)
            fits.append({"track": track.id, "frames": segment, "residual_px": residual, "gravity": g})
    return fits


def gravity_scores(analysis: VideoAnalysis, expected: dict,
                   fits: list[dict] | None = None) -> tuple[float | None, float | None, float | None]:
    """(RMS parabola residual in px over all free-flight segments, gravity consistency, median g).

    Gravity consistency is the fraction of segments whose g is within 15 % of the expected
    magnitude (9.81 m/s² unless ``expected["gravity"]`` says otherwise) and points down: a world
    where things fall up scores 0 whatever the prompt claimed. ``fits``: ``gravity_fits``, if already made.
    """
    fits = gravity_fits(analysis, expected) if fits is None else fits
    if not fits:
        return None, None, None
    residual = float(np.sqrt(np.mean([f["residual_px"] ** 2 for f in fits])))
    reference = abs(float(expected.get("gravity") or GRAVITY))
    estimates = [f["gravity"] for f in fits if f["gravity"] is not None]
    if not estimates:
        return residual, None, None
    good = [abs(g - reference) <= GRAVITY_TOLERANCE * reference for g in estimates]
    return residual, float(np.mean(good)), float(np.median(estimates))


def parabola_fit_score(analysis: VideoAnalysis, expected: dict, fits: list[dict] | None = None) -> float | None:
    """The fraction of free-flight segments that fit a parabola with the world's gravity: RMS residual
    at most PARABOLA_FIT_PX (at 64x64; scaled with the frame's smaller side) and, where the scale is
    known, g within GRAVITY_TOLERANCE of the expected magnitude, pointing down. None without segments."""
    fits = gravity_fits(analysis, expected) if fits is None else fits
    if not fits:
        return None
    limit = PARABOLA_FIT_PX * min(analysis.width, analysis.height) / 64.0
    reference = abs(float(expected.get("gravity") or GRAVITY))
    good = [f["residual_px"] <= limit
            and (f["gravity"] is None or abs(f["gravity"] - reference) <= GRAVITY_TOLERANCE * reference)
            for f in fits]
    return float(np.mean(good))


def _expected_object(expected: dict, track: Track) -> dict | None:
    """The one expected object with the track's colour and shape (None if none or several)."""
    found = [o for o in expected.get("objects") or [] if (o.get("color"), o.get("shape")) == track.key]
    return found[0] if len(found) == 1 else None


def rebounds(analysis: VideoAnalysis, track: Track, static: np.ndarray) -> list[dict]:
    """Ground bounces whose drop and rebound can both be read: ``ratio`` = rebound height / drop
    height, each from the ground row to the object's bottom at the highest sample of the flight
    into and out of the bounce (followed from the bounce for as long as the object keeps rising).
    Both tops must lie inside the static run, with a sample on their far side, so that neither is cut
    off by what was seen; the top before may also be the first frame of the shot (the object started
    there). The world makes the ratio restitution squared: 0.64 for bouncy objects, 0.12 for heavy."""
    rows_of = dict(zip(track.frames, track.row))
    radius_of = dict(zip(track.frames, track.radius_px))
    clean_of = dict(zip(track.frames, track.clean))
    bounces = {b["frame"]: b for b in detect_bounces(analysis, track, static) if b["at_ground"] and not b["at_object"]}
    out = []
    for run in _runs(analysis, track.frames, static):
        rows = [rows_of[f] for f in run]
        opens_shot = run[0] == 0 or analysis.shot_of(run[0]) != analysis.shot_of(run[0] - 1)
        for k, f in enumerate(run):
            if f not in bounces:
                continue
            after = k + 1
            while after + 1 < len(run) and rows[after + 1] < rows[after]:
                after += 1
            before = k - 1
            while before - 1 >= 0 and rows[before - 1] < rows[before]:
                before -= 1
            if after + 1 >= len(run) or (before == 0 and not opens_shot):
                continue  # the top may lie outside what was seen
            top_before, top_after = run[before], run[after]
            if not (clean_of[top_before] and clean_of[top_after]):
                continue
            ground = bounces[f]["ground_row"]
            drop = ground - (rows_of[top_before] + radius_of[top_before])
            rise = ground - (rows_of[top_after] + radius_of[top_after])
            if drop >= MIN_DROP_PX:
                out.append({"frame": f, "drop_px": float(drop), "rise_px": float(rise),
                            "ratio": float(max(rise, 0.0) / drop)})
    return out


def rebound_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Heavy objects bounce lower than bouncy ones: of the readable rebounds (``rebounds``) of objects
    whose material the expectation names, the fraction on their material's side of REBOUND_SPLIT (the
    geometric mean of the two materials' restitution squared). None when none can be read."""
    static = _static_frames(analysis, expected)
    verdicts = []
    for track in analysis.tracks:
        obj = _expected_object(expected, track)
        material = None if obj is None else obj.get("material")
        if material not in MATERIALS:
            continue
        for r in rebounds(analysis, track, static):
            verdicts.append((r["ratio"] < REBOUND_SPLIT) == (material == "heavy"))
    return float(np.mean(verdicts)) if verdicts else None


def mark_tracks(analysis: VideoAnalysis, static: np.ndarray) -> list[dict]:
    """Paint marks followed through each static run of frames within a shot: a mark is a colour at a
    place on the ground (detections of its colour overlapping its extent, within 2 px). Each entry:
    ``color``, ``first`` frame seen, ``seen`` (frames seen), ``frames`` (frames from ``first`` to the
    run's end where it could be seen: where it was seen, or not behind the occluder's box)."""
    out: list[dict] = []
    frames = list(range(analysis.num_frames))
    for run in _runs(analysis, frames, static):
        marks: list[dict] = []
        for f in run:
            for det in analysis.frames[f].marks:
                # A detection counts for every mark of its colour it overlaps: marks side by side on the ground
                # read as one stretch of paint, and each of them is seen in it.
                matches = [m for m in marks if m["color"] == det.color
                           and det.x0 < m["x1"] + 2 and m["x0"] - 2 < det.x1]
                if not matches:
                    marks.append({"color": det.color, "x0": det.x0, "x1": det.x1, "first": f, "seen": {f}})
                for match in matches:
                    match["seen"].add(f)
                    match["x0"], match["x1"] = min(match["x0"], det.x0), max(match["x1"], det.x1)
        for m in marks:
            later = [f for f in run if f >= m["first"]
                     and (f in m["seen"] or not _mark_hidden(analysis, f, m["x0"], m["x1"], m["color"]))]
            out.append({"color": m["color"], "first": m["first"], "seen": sorted(m["seen"]), "frames": later,
                        "x0": m["x0"], "x1": m["x1"], "end": run[-1]})
    return out


def _mark_hidden(analysis: VideoAnalysis, frame: int, x0: float, x1: float, color: str) -> bool:
    """Half or more of the mark's extent is out of sight: behind the occluder (widened by a pixel each side),
    under paint of another colour laid over it, or under an object on or just above the ground (the object
    and its shadow cover the band where marks are read)."""
    info = analysis.frames[frame]

    def covers(a: float, b: float) -> bool:
        return min(x1, b) - max(x0, a) >= 0.5 * (x1 - x0)

    if info.occluder_bbox is not None and covers(info.occluder_bbox[0] - 1, info.occluder_bbox[2] + 1):
        return True
    if any(m.color != color and covers(m.x0, m.x1) for m in info.marks):
        return True
    if info.ground_row is None:
        return False
    reach = MARK_SHADOW_METRES * info.scale  # a shadow fades with the object's height above the ground
    return any(covers(d.bbox[0], d.bbox[2]) and d.bbox[3] >= info.ground_row - reach for d in info.objects)


def _made(mark: dict) -> bool:
    """Seen in MIN_MARK_FRAMES consecutive frames: a mark, not a flicker of colour."""
    seen = mark["seen"]
    return any(all(f + k in seen for k in range(MIN_MARK_FRAMES)) for f in seen)


def marks_kept_score(analysis: VideoAnalysis, expected: dict, marks: list[dict] | None = None) -> float | None:
    """A paint-covered object's marks stay: of the marks made in the colour of an object the
    expectation calls paint-covered (``mark_tracks``, seen in at least MIN_MARK_FRAMES frames in a row,
    in static shots), the fraction seen in at least MARK_KEPT_SHARE of the frames from their first to
    the end of their run where they are in sight, and in one of its last two frames. A mark out of sight
    in both of those frames is not judged. None when no mark can be judged. ``marks``: ``mark_tracks``,
    if already made."""
    paint = {o.get("color") for o in expected.get("objects") or [] if o.get("paint")}
    if not paint:
        return None
    if marks is None:
        marks = mark_tracks(analysis, _static_frames(analysis, expected))
    verdicts = []
    for mark in marks:
        if mark["color"] not in paint or not _made(mark) or not mark["frames"]:
            continue
        if mark["frames"][-1] < mark["end"] - 1:
            continue  # out of sight in the run's last two frames: whether it stayed cannot be seen
        visible = set(mark["frames"])
        share = len(visible & set(mark["seen"])) / len(visible)
        at_end = bool(set(mark["frames"][-2:]) & set(mark["seen"]))
        verdicts.append(share >= MARK_KEPT_SHARE and at_end)
    return float(np.mean(verdicts)) if verdicts else None


def marks_made_score(analysis: VideoAnalysis, expected: dict, marks: list[dict] | None = None) -> float | None:
    """A diagnostic beside ``marks_kept``: of the paint-covered objects that should leave a mark (a
    ``mark`` event where events are given, else a falling action), the fraction whose colour shows as
    a mark made. None when no object should mark the ground. ``marks``: ``mark_tracks``, if already made."""
    objects = expected.get("objects") or []
    events = expected.get("events")
    static = _static_frames(analysis, expected)
    if events:
        # A mark appears the frame after its event and must then be seen for MIN_MARK_FRAMES frames.
        should = {int(e["objects"][0]) for e in events if e.get("kind") == "mark" and e.get("objects")
                  and int(e["frame"]) + MIN_MARK_FRAMES < analysis.num_frames
                  and static[int(e["frame"]) + 1:int(e["frame"]) + 1 + MIN_MARK_FRAMES].all()}
    else:
        should = {i for i, o in enumerate(objects) if o.get("paint") and o.get("action") in BOUNCING_ACTIONS}
    should = {i for i in should if 0 <= i < len(objects)}
    if not should:
        return None
    made = {m["color"] for m in (mark_tracks(analysis, static) if marks is None else marks) if _made(m)}
    return float(np.mean([objects[i].get("color") in made for i in sorted(should)]))


def _near_edge(analysis: VideoAnalysis, det: ObjectDetection, velocity: tuple[float, float]) -> bool:
    """The object touches the frame edge, or would cross it within a frame at its velocity."""
    if det.touches_border:
        return True
    x0, y0, x1, y1 = det.bbox
    dx, dy = velocity
    margin = 1.0
    return (min(x0, x0 + dx) <= margin or max(x1, x1 + dx) >= analysis.width - margin
            or min(y0, y0 + dy) <= margin or max(y1, y1 + dy) >= analysis.height - margin)


def _near_occluder(analysis: VideoAnalysis, det: ObjectDetection, velocity: tuple[float, float], frame: int) -> bool:
    if det.occluded or det.near_occluder:
        return True
    box = analysis.frames[frame].occluder_bbox
    if box is None:
        return False
    x0, _, x1, _ = det.bbox
    reach = abs(velocity[0]) + det.radius_px
    return x1 + reach >= box[0] and x0 - reach <= box[2]


def _step(track: Track, frame: int, other: int) -> tuple[float, float]:
    """The track's displacement from ``other`` to ``frame`` (0, 0 if it was not seen at ``other``):
    one more such step from ``frame`` is where it was heading (other = frame - 1) or came from
    (other = frame + 1)."""
    positions = dict(zip(track.frames, zip(track.col, track.row)))
    if other not in positions:
        return 0.0, 0.0
    return positions[frame][0] - positions[other][0], positions[frame][1] - positions[other][1]


def _explained(analysis: VideoAnalysis, track: Track, frame: int, other: int) -> bool:
    det = _detection(analysis, track, frame)
    step = _step(track, frame, other)
    return det is not None and (_near_edge(analysis, det, step) or _near_occluder(analysis, det, step, frame))


def _touching(analysis: VideoAnalysis, track: Track, frame: int, real: set[int]) -> bool:
    """The track's detection at ``frame`` touches (within a pixel) another real track's: two objects side by
    side can read as one blob for a few frames."""
    det = _detection(analysis, track, frame)
    if det is None:
        return False
    x0, y0, x1, y1 = det.bbox
    return any(o.track != track.id and o.track in real and o.bbox[0] <= x1 + 1 and o.bbox[2] >= x0 - 1
               and o.bbox[1] <= y1 + 1 and o.bbox[3] >= y0 - 1 for o in analysis.frames[frame].objects)


def permanence_events(analysis: VideoAnalysis, expected: dict) -> tuple[int, int, int]:
    """(unexplained vanishings, unexplained appearances, tracks).

    Within a shot, a track that ends early, starts late, or misses more than MAX_GAP_FRAMES frames in a row
    (at the shot's ends too) must do so at the frame edge, at or behind the occluder, or (appearing) at a
    thrown-in event. A track that misses frames and comes back may also do so where it touches another
    object (the two read as one blob for a while); a track that starts or ends beside another object is
    still counted, since that is how a blob that splits off or melts into another looks.
    Tracks seen for fewer than MIN_TRACK_FRAMES frames are detector noise and not counted.
    """
    thrown_in = [int(e["frame"]) for e in expected.get("events") or [] if e.get("kind") == "thrown_in"]
    vanish = spawn = 0
    tracks = [t for t in analysis.tracks if _real(analysis, t)]
    real = {t.id for t in tracks}
    for track in tracks:
        for shot in analysis.shots:
            frames = [f for f in track.frames if shot.start <= f < shot.end]
            if not frames:
                continue
            ends = [frames[-1]] if frames[-1] < shot.end - 1 - MAX_GAP_FRAMES else []
            starts = [frames[0]] if frames[0] > shot.start + MAX_GAP_FRAMES else []
            for a, b in pairwise(frames):
                if b - a > MAX_GAP_FRAMES + 1 and not (_touching(analysis, track, a, real)
                                                       and _touching(analysis, track, b, real)):
                    ends.append(a)
                    starts.append(b)
            vanish += sum(not _explained(analysis, track, f, f - 1) for f in ends)
            spawn += sum(not _explained(analysis, track, f, f + 1) and not any(abs(f - e) <= 3 for e in thrown_in)
                         for f in starts)
    return vanish, spawn, len(tracks)


def permanence_score(analysis: VideoAnalysis, expected: dict) -> tuple[float | None, int, int]:
    """Object permanence: 1 if nothing vanishes or appears mid-shot without a reason (frame edge,
    occluder, cut, thrown-in event), else 1 - violations / tracks, at least 0."""
    vanish, spawn, tracks = permanence_events(analysis, expected)
    if tracks == 0:
        return None, vanish, spawn
    return float(max(0.0, 1.0 - (vanish + spawn) / tracks)), vanish, spawn


def _rgb_drift(first: list, last: list) -> float | None:
    first = [c for c in first if c is not None]
    last = [c for c in last if c is not None]
    if not first or not last:
        return None
    delta = np.mean(np.array(first, float), axis=0) - np.mean(np.array(last, float), axis=0)
    return float(np.linalg.norm(delta) / (255.0 * np.sqrt(3.0)))


def color_drift(analysis: VideoAnalysis) -> float | None:
    """Colour drift: the largest change, between the start and the end of the clip, of the mean
    colour of the sky, the ground and each track (RGB distance / (255 sqrt 3), 0 = none). The parts
    compared are the first and last quarter, at most DRIFT_SECONDS long."""
    count = analysis.num_frames
    if count < 2:
        return None
    part = max(1, min(count // 4, int(round(DRIFT_SECONDS * analysis.fps))))
    drifts = [
        _rgb_drift([f.sky_rgb for f in analysis.frames[:part]], [f.sky_rgb for f in analysis.frames[-part:]]),
        _rgb_drift([f.ground_rgb for f in analysis.frames[:part]], [f.ground_rgb for f in analysis.frames[-part:]]),
    ]
    for track in analysis.tracks:
        if len(track.frames) < 2 * MIN_TRACK_FRAMES:
            continue
        dets = [_detection(analysis, track, f) for f in track.frames]
        n = max(1, min(len(dets) // 4, part))
        first, last = dets[:n], dets[-n:]
        # Chroma subsampling pales small objects, so only compare views of about the same size.
        sizes = np.median([d.radius_px for d in first]), np.median([d.radius_px for d in last])
        if max(sizes) <= COMPARABLE_SIZE * min(sizes):
            drifts.append(_rgb_drift([d.rgb for d in first], [d.rgb for d in last]))
    drifts = [d for d in drifts if d is not None]
    return max(drifts) if drifts else None


def cross_shot_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Cross-shot consistency: the fraction of cuts across which the sky and ground classes stay the
    same and every object seen after the cut was seen before it (or is expected), with the shot's
    expected subject in view. None without cuts."""
    if len(analysis.shots) < 2:
        return None
    objects = expected.get("objects") or []
    expected_keys = {(o.get("color"), o.get("shape")) for o in objects}
    shots_expected = expected.get("shots") or []

    def keys(shot) -> set:
        return {t.key for t in analysis.tracks if sum(shot.start <= f < shot.end for f in t.frames) >= 2}

    seen = keys(analysis.shots[0])
    verdicts = []
    for before, after in zip(analysis.shots, analysis.shots[1:]):
        now = keys(after)
        ok = before.sky == after.sky
        if None not in (before.ground, after.ground):
            ok = ok and before.ground == after.ground
        ok = ok and now <= (seen | expected_keys)
        subject = next((s.get("subject") for s in shots_expected if s["start"] <= after.start < s["end"]), None)
        if subject is not None and 0 <= subject < len(objects):
            ok = ok and (objects[subject].get("color"), objects[subject].get("shape")) in now
        verdicts.append(ok)
        seen |= now
    return float(np.mean(verdicts))


def shot_count_score(analysis: VideoAnalysis, expected: dict) -> float | None:
    """Shots: 1 if the detected cuts are exactly the expected shot starts, else the fraction matched
    (of the larger of the two lists)."""
    shots = expected.get("shots")
    if not shots:
        return None
    wanted = {int(s["start"]) for s in shots[1:]}
    found = set(analysis.cuts)
    if not wanted and not found:
        return 1.0
    return len(wanted & found) / max(len(wanted), len(found))


def score_clip(analysis: VideoAnalysis, expected: dict) -> dict[str, float | None]:
    """Every metric for one clip (see the module docstring for ``expected``)."""
    fits = gravity_fits(analysis, expected)
    residual, consistency, gravity = gravity_scores(analysis, expected, fits)
    marks = mark_tracks(analysis, _static_frames(analysis, expected))
    permanence, vanish, spawn = permanence_score(analysis, expected)
    drift = color_drift(analysis)
    checks = attribute_checks(analysis, expected)
    return {
        "attributes": _attribute_rate(checks),
        **{f"attributes_{name}": _pass_rate(values) for name, values in checks.items()},
        "motion_direction": motion_direction_score(analysis, expected),
        "bounces": bounce_score(analysis, expected),
        "parabola_residual_px": residual,
        "parabola_fit": parabola_fit_score(analysis, expected, fits),
        "rebound": rebound_score(analysis, expected),
        "gravity_consistency": consistency,
        "gravity_estimate": gravity,
        "permanence": permanence,
        "permanence_clean": None if permanence is None else float(vanish + spawn == 0),
        "vanish_events": float(vanish),
        "spawn_events": float(spawn),
        "marks_kept": marks_kept_score(analysis, expected, marks),
        "marks_made": marks_made_score(analysis, expected, marks),
        "color_drift": drift,
        "color_stability": None if drift is None else float(drift < COLOR_DRIFT_LIMIT),
        "cross_shot_consistency": cross_shot_score(analysis, expected),
        "shot_count": shot_count_score(analysis, expected),
    }


MIN_TARGET_CLIPS = 10  # a target is judged met or not over at least this many clips where its measure applies
# The embedded model's targets for single-clip measures: (metric, target, what it is), each a mean over
# clips of ``score_clip``'s value (``permanence_clean``: the fraction of clips where nothing vanishes).
CLIP_TARGETS = (
    ("attributes", 0.95, "object colour, shape, count; sky and ground"),
    ("motion_direction", 0.95, "motion direction"),
    ("parabola_fit", 0.90, "free flight fits a parabola with the world's gravity"),
    ("bounces", 0.90, "bounces only at the ground or against objects"),
    ("rebound", 0.90, "heavy objects rebound lower than bouncy ones"),
    ("permanence_clean", 0.95, "clips where no object vanishes or appears"),
    ("marks_kept", 0.90, "paint marks stay until the end"),
)


def clip_targets(scores: list[dict]) -> dict[str, dict]:
    """Each of CLIP_TARGETS over clips' ``score_clip`` values: ``value`` (the mean over the clips where
    it applies, None where it applies to none), ``clips`` (how many), ``target`` and ``met``: whether
    the value reaches the target, None when fewer than MIN_TARGET_CLIPS clips could be read."""
    out = {}
    for name, target, what in CLIP_TARGETS:
        values = [float(s[name]) for s in scores if s.get(name) is not None]
        value = float(np.mean(values)) if values else None
        met = None if len(values) < MIN_TARGET_CLIPS else bool(value >= target)
        out[name] = {"value": value, "clips": len(values), "target": target, "met": met, "what": what}
    return out


def format_clip_targets(targets: dict[str, dict]) -> str | None:
    """One line: each single-clip measure (``clip_targets``) against its target, with the number of
    clips it could be read in; None when no measure could be read in any clip (a suite of storyboards,
    whose shots are scored by ``kinema.eval.long``)."""
    if not any(t["clips"] for t in targets.values()):
        return None
    parts = []
    for name, t in targets.items():
        if t["value"] is None:
            parts.append(f"{name} - (read in no clip; >= {t['target']:.2f}, not met)")
        else:
            clips = f"{t['clips']} clip{'' if t['clips'] == 1 else 's'}"
            verdict = {True: "", False: ", not met", None: ", too few clips to judge"}[t["met"]]
            parts.append(f"{name} {t['value']:.2f} ({clips}; >= {t['target']:.2f}{verdict})")
    return "targets: " + "; ".join(parts)


def summarize(scores: list[dict]) -> dict[str, float | None]:
    """Mean of each metric over clips, ignoring None; ``clips`` counts the clips."""
    keys: list[str] = []
    for score in scores:
        keys += [k for k in score if k not in keys]
    out: dict[str, float | None] = {}
    for key in keys:
        values = [float(s[key]) for s in scores if s.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    out["clips"] = float(len(scores))
    return out
