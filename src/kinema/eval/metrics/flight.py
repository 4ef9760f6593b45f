"""Free flight: segments of a track in the air, the parabola they fit and the gravity it implies."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from kinema.eval.analyzer import Track, VideoAnalysis
from kinema.eval.metrics.tracks import detection_at, framing_of_frames, scale_at, static_frames, track_runs
from kinema.world.scene import GRAVITY

MIN_FLIGHT_FRAMES = 5
KINK_PX = 0.5  # a jump in the second difference of row this big splits a flight
GROUND_CLEARANCE_PX = 0.5  # plus a quarter radius: closer to the ground, small hops hide between frames
GRAVITY_TOLERANCE = 0.15
PARABOLA_FIT_PX = 1.0  # a free-flight segment fits a parabola when its RMS residual is this small at 64x64


def flight_segments(analysis: VideoAnalysis, track: Track, static: np.ndarray) -> list[list[int]]:
    """Runs of at least MIN_FLIGHT_FRAMES consecutive frames of free flight in static shots: fully
    visible, clear of the ground and of other objects, split at bounces, and moving vertically."""
    rows_of = dict(zip(track.frames, track.row))
    keep = np.zeros(analysis.num_frames, bool)
    for f, row, radius in zip(track.frames, track.row, track.radius_px):
        det = detection_at(analysis, track, f)
        ground = analysis.frames[f].ground_row
        clear_of_ground = ground is None or row + radius < ground - GROUND_CLEARANCE_PX - 0.25 * radius
        alone = det is not None and not any(
            o.track != track.id and np.hypot(o.col - det.col, o.row - det.row) <= 1.2 * (o.radius_px + radius)
            for o in analysis.frames[f].objects)
        keep[f] = static[f] and det is not None and det.clean and clear_of_ground and alone
    segments = []
    for run in track_runs(analysis, track.frames, keep):
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
    static = static_frames(analysis, expected)
    framing = framing_of_frames(analysis, expected)
    fits = []
    for track in analysis.tracks:
        rows_of = dict(zip(track.frames, track.row))
        for segment in flight_segments(analysis, track, static):
            t = np.array(segment, float) - segment[0]
            rows = np.array([rows_of[f] for f in segment])
            coefficients = np.polyfit(t, rows, 2)
            residual = float(np.sqrt(np.mean((np.polyval(coefficients, t) - rows) ** 2)))
            scale = scale_at(analysis, framing[segment[0]], segment[0])
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
