"""Prompt extension by a chat model: the prompt sent to any OpenAI-compatible chat endpoint the user runs (a local
llama.cpp, vLLM or Ollama server), with a system prompt in the manner of Wan's prompt extender, which rewrites a
short prompt into the detailed, present-tense description of subject, motion, scene and camera that Wan was
trained on. A timeout, an unreachable server or an answer that is not a usable prompt falls back to the prompt as
written, with a warning: extension improves a video, it never stops one.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

from kinema.frames import MAX_PROMPT_CHARS

TIMEOUT_SECONDS = 30.0
SYSTEM_PROMPT = (
    "You are a prompt engineer for a text-to-video model. Rewrite the user's prompt into one detailed paragraph "
    "of 80 to 120 English words that the model can film. Keep every subject, action and detail the user gives and "
    "contradict none of them. Describe the main subject's appearance, its motion in order, the setting and "
    "lighting, and the shot: framing and camera movement. Write in the present tense, as a plain description, "
    "with no title, no list, no quotes and no commentary. Answer with the rewritten prompt only."
)


def chat_url(url: str) -> str:
    """The chat completions address for a server's base URL (``http://host:port`` or ``.../v1``) or the full one."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    return f"{url}/chat/completions" if url.endswith("/v1") else f"{url}/v1/chat/completions"


def extend_prompt(prompt: str, url: str, model: str = "default", timeout: float = TIMEOUT_SECONDS,
                  warn: Callable[[str], None] | None = None) -> str | None:
    """The extended prompt from the chat endpoint at ``url``, or None (with a warning to ``warn``) when it times
    out, fails or answers something that is not a prompt."""
    body = json.dumps({"model": model, "temperature": 0.7, "max_tokens": 400, "messages": [
        {"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt}]}).encode()
    request = urllib.request.Request(chat_url(url), data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read(1 << 20))
        text = answer["choices"][0]["message"]["content"]
    except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as error:
        reason = "timed out" if isinstance(getattr(error, "reason", error), TimeoutError) else \
            " ".join(str(error).split())[:160] or type(error).__name__
        return _fallback(warn, f"prompt extension at {url} failed ({reason})")
    text = " ".join(str(text).split()).strip().strip('"')
    if not text or len(text) > MAX_PROMPT_CHARS:
        return _fallback(warn, f"prompt extension at {url} gave {'no' if not text else 'too long a'} prompt")
    return text


def _fallback(warn: Callable[[str], None] | None, message: str) -> None:
    if warn is not None:
        warn(f"warning: {message}; using the prompt as written")
    return None
