"""Evaluation: find and track the world's objects in any video, and score clips against prompts."""

from kinema.eval.analyzer import (
    FrameAnalysis,
    MarkDetection,
    ObjectDetection,
    ShotSummary,
    Track,
    VideoAnalysis,
    analyze_file,
    analyze_frame,
    analyze_video,
)
from kinema.eval.metrics import expectation_from_scene, score_clip, summarize

__all__ = [
    "FrameAnalysis",
    "MarkDetection",
    "ObjectDetection",
    "ShotSummary",
    "Track",
    "VideoAnalysis",
    "analyze_file",
    "analyze_frame",
    "analyze_video",
    "expectation_from_scene",
    "score_clip",
    "summarize",
]
