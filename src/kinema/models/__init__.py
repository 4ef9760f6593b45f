"""The networks: ``vae`` (the causal video compression network); the diffusion transformer and the text
encoders join as ``dit`` and ``text``. Import the module you need; this package imports nothing."""
