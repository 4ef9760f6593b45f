"""Flow matching: the training objective with per-frame noise levels, and samplers."""

# Every sampler by name, here so that a request's sampler is checked without importing torch: the joint samplers of
# ``kinema.diffusion.sampling.SAMPLERS``, and "ar", frame by frame (``sample_autoregressive_cached``, which the
# pipeline runs with a frame cache), and "scheduler", the steps of a model folder's own diffusers scheduler (Wan's
# UniPC; ``sample_scheduler``).
SAMPLER_NAMES = ("euler", "heun", "ar", "scheduler")
