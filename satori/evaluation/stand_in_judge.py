"""A stand-in for an LLM judge: a small OpenAI-protocol chat server on 127.0.0.1 that answers VLMEvalKit's judge
prompts by rule, so the judged benchmarks' real evaluate() runs offline (the rehearsal, the tests).

It reads the prompts VLMEvalKit 0.0.19 sends: MathVista's and MATH-Vision's extraction prompt ("Model respone: ...
Extracted answer:"), MathVerse's extraction ("Model response: '...'\\nExtracted Answer: ") and its scoring prompt
("[Standard Answer]: ... [Model_answer] : ... Judgement:"), and `hello` (VLMEvalKit's `working()` check). It extracts
the last number in the response, else a lone option letter, else the response stripped: deterministic, and not the
rule the judge-free score uses (satori.evaluation.judging), so the two can disagree as a real judge and a rule do.
A request without the expected key (`Authorization: Bearer KEY`) is refused with 401, as a hosted API refuses it.

    python -m satori.evaluation.stand_in_judge --run CMD ...

serves on a free port while CMD runs, with SATORI_JUDGE_URL (its /v1 base URL) and SATORI_JUDGE_KEY (the
environment's, else a random key) in CMD's environment; it exits with CMD's status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

URL_ENV = "SATORI_JUDGE_URL"
KEY_ENV = "SATORI_JUDGE_KEY"
MODEL = "stand-in-judge"

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
LETTER = re.compile(r"(?<![A-Za-z])([A-H])(?![A-Za-z])")


def extracted(response: str) -> str:
    """The answer the stand-in reads in a model's response: its last number, else a lone capital option letter,
    else the response itself, stripped; `null` for an empty one (VLMEvalKit takes an empty reply for a failed
    request and asks again)."""
    numbers = NUMBER.findall(response)
    if numbers:
        return numbers[-1]
    letters = LETTER.findall(response)
    return letters[-1] if letters else response.strip() or "null"


def same_answer(standard: str, answer: str) -> bool:
    """MathVerse's judgement: the two equal once spaces are gone and case folded, or equal as numbers."""
    a, b = re.sub(r"\s+", "", standard).casefold(), re.sub(r"\s+", "", answer).casefold()
    if a == b:
        return True
    try:
        return abs(float(a) - float(b)) < 1e-6
    except ValueError:
        return False


def reply(prompt: str) -> str:
    """What the stand-in answers to one of VLMEvalKit's judge prompts."""
    if "[Standard Answer]:" in prompt and prompt.rstrip().endswith("Judgement:"):
        last = prompt[prompt.rindex("[Standard Answer]:"):]  # the question asked, after the worked examples
        standard = re.search(r"\[Standard Answer\]:(.*)", last)[1]
        answer = re.search(r"\[Model_answer\] :(.*)", last)[1]
        return "1" if same_answer(standard.strip(), answer.strip()) else "0"
    for opening, closing in (("Model respone: ", "Extracted answer:"), ("Model response: '", "'\nExtracted Answer:")):
        if prompt.rstrip().endswith(closing.strip()) and opening in prompt:
            response = prompt[prompt.rindex(opening) + len(opening):]
            return extracted(response[: response.rindex(closing.strip())].removesuffix("'\n"))
    return "Hello! I am a stand-in judge."


class _Handler(BaseHTTPRequestHandler):
    server: _JudgeServer

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        authorised = self.headers.get("Authorization") == f"Bearer {self.server.key}"
        with self.server.lock:
            self.server.requests += 1
            self.server.refused += not authorised
        if not authorised or not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(401 if not authorised else 404, {"error": {"message": "refused"}})
            return
        messages = body.get("messages", [])
        content = messages[-1]["content"] if messages else ""
        if isinstance(content, list):
            content = "\n".join(part.get("text", "") for part in content if isinstance(part, dict))
        answer = reply(str(content))
        self._send(200, {"id": "stand-in", "object": "chat.completion", "model": body.get("model", MODEL),
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                      "finish_reason": "stop"}]})  # fmt: skip

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # quiet: a request line per judged question is noise
        pass


class _JudgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, key: str):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.key = key
        self.lock = threading.Lock()
        self.requests = 0
        self.refused = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@contextlib.contextmanager
def serving(key: str) -> Iterator[_JudgeServer]:
    """The stand-in judge on a free port of 127.0.0.1 while the block runs (its base_url, requests, refused)."""
    server = _JudgeServer(key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs=argparse.REMAINDER, required=True, help="the command to run beside it")
    args = parser.parse_args(argv)
    key = os.environ.get(KEY_ENV) or secrets.token_hex(16)
    with serving(key) as server:
        env = {**os.environ, URL_ENV: server.base_url, KEY_ENV: key}
        status = subprocess.run(args.run, env=env).returncode
        print(f"stand-in judge: {server.requests} request(s), {server.refused} refused", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
