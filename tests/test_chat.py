"""Prompt extension through an OpenAI-compatible chat endpoint, against a small local fake server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kinema.inference.chat import SYSTEM_PROMPT, chat_url, extend_prompt


@pytest.fixture
def chat_server():
    """A fake chat server on 127.0.0.1; ``answers`` says what the next request gets (a JSON body, a raw body, or
    'hang'); ``seen`` holds the requests it got."""
    state = {"answer": None, "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["seen"].append((self.path, body))
            answer = state["answer"]
            if answer == "hang":
                threading.Event().wait(2)
                return
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", state
    server.shutdown()
    server.server_close()


def reply(text):
    return {"choices": [{"message": {"role": "assistant", "content": text}}]}


def test_the_prompt_goes_to_the_chat_endpoint_with_the_system_prompt(chat_server):
    url, state = chat_server
    state["answer"] = reply("  A red ball arcs to the right across a sunny beach, filmed in a slow pan. ")
    assert extend_prompt("a red ball", f"{url}/v1") == "A red ball arcs to the right across a sunny beach, filmed " \
                                                       "in a slow pan."
    path, body = state["seen"][0]
    assert path == "/v1/chat/completions"
    assert body["messages"] == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "a red ball"}]


@pytest.mark.parametrize("answer, why", [(b"not json", "failed"), ({"choices": []}, "failed"), (reply(""), "no"),
                                         (reply("x" * 5000), "too long"), ("hang", "timed out")])
def test_a_bad_answer_or_a_timeout_falls_back_with_a_warning(chat_server, answer, why):
    url, state = chat_server
    state["answer"] = answer
    warnings = []
    assert extend_prompt("a red ball", url, timeout=0.5, warn=warnings.append) is None
    assert len(warnings) == 1 and why in warnings[0] and "using the prompt as written" in warnings[0]


def test_an_unreachable_server_falls_back():
    warnings = []
    assert extend_prompt("a red ball", "http://127.0.0.1:9", timeout=1, warn=warnings.append) is None
    assert warnings


def test_chat_url_accepts_a_base_or_the_full_address():
    assert chat_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_url("http://h:1/v1/chat/completions") == "http://h:1/v1/chat/completions"


def test_generate_records_the_extended_prompt(chat_server, tmp_path, tiny_model_folder):
    from kinema.inference.generate import run
    from kinema.inference.pipeline import KinemaPipeline
    from kinema.inference.request import Request
    from kinema.media import read_metadata

    url, state = chat_server
    state["answer"] = reply("A red ball is thrown to the right.")
    pipe = KinemaPipeline.from_pretrained(tiny_model_folder(tmp_path / "m"))
    out = run(pipe, Request(prompt="a red ball", output=str(tmp_path / "x.mp4"), seconds=0.5, steps=1,
                            expand_with=url))
    meta = read_metadata(out)
    assert meta["expanded_prompt"] == "A red ball is thrown to the right." and meta["expand_with"] == url
