"""Flow matching: the training objective with per-frame noise levels, and samplers."""
