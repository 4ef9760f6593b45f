"""diffusers' entry point to this model folder.

``diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` reads ``_class_name`` in
model_index.json and imports the pipeline class from here; kinema must be installed. ``KinemaPipeline.from_pretrained``
reads the folder without this file.
"""

from kinema.inference.pipeline import KinemaPipeline

__all__ = ["KinemaPipeline"]
