"""Inference: a request in, frames out.

``request`` checks a request and resolves its length; ``settings`` the model's sampling defaults and the values a
request runs with; ``expand`` rewrites a prompt in the style of the training captions; ``pipeline`` is
``KinemaPipeline`` (text, images and videos in, frames out, with ``conditioning`` describing the known frames);
``storyboard`` and ``longvideo`` make videos of several shots or longer than one pass; ``generate`` runs one
request end to end and writes the file; ``suite`` generates and scores a prompt suite.
"""
