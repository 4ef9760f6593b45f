"""Training: a shared loop (``Trainer`` running a task), checkpoints, EMA and torchrun support.

The model-specific tasks live in ``kinema.train.vae`` and ``kinema.train.dit``; ``kinema train`` runs them
(``kinema.cli.train``), in one process or under ``torchrun -m kinema train ...``.
"""
