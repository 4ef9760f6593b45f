"""Training: a shared loop (``Trainer`` running a task), checkpoints, EMA and torchrun support.

The model-specific tasks live in ``kinema.train.vae`` (and later ``kinema.train.dit``); import
them directly, so that ``python -m kinema.train.vae`` runs cleanly.
"""
