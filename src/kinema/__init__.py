"""kinema: text-to-video with a causal video VAE, a diffusion transformer and flow matching."""

__version__ = "0.1.0"
