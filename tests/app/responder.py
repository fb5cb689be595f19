"""A scripted OpenAI-compatible model server for the agent tests.

It stands in for a capable LLM (none can run here): the query-rewrite call gets a known
rewrite as JSON, answers cite source [1], and ``--slow`` streams one word every 0.2 s so
a test can kill it mid-answer. Run: ``python -m tests.app.responder --port N [--slow]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

MODEL = "responder"
REWRITE = "What is the boiling point of water at sea level?"
ANSWER = "Water boils at 100 degrees Celsius at sea level [1]. See also [7]."
# What a small model writes: the right words from the source, no citation marker.
UNCITED = "Ice melts at 0 degrees Celsius. I hope that helps!"
# What a small model also writes: an answer no source says a word of, citing nothing.
MADE_UP = "The moon is made of green cheese, according to ancient legends."
# What a small model sometimes streams: a false start, no answer at all. Asked again
# (not streamed: the agent's retry), it gives UNCITED.
FALSE_START = "The answer is:"
# What a small model also does: say a whole sentence again.
TWICE = (
    "Ice melts at 0 degrees Celsius [1]. It turns into water. "
    "Ice melts at 0 degrees Celsius [1]. It turns into water."
)
# What a small model sometimes does: a good start, then one phrase until max_tokens.
LOOPING = "Yes, water boils at 100 degrees Celsius [1]. " + "It is very hot and " * 2000


def build(slow: bool) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": MODEL, "demo_model": False}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL, "object": "model", "parent": None}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await request.json()
        system = body["messages"][0]["content"] if body["messages"] else ""
        last = body["messages"][-1]["content"] if body["messages"] else ""
        asked = last.rsplit("Question:", 1)[-1]
        text = (
            json.dumps({"standalone": REWRITE, "route": "retrieve"})
            if "standalone" in system
            else json.dumps({"answers": "no" if "boil" in asked else "yes"})
            if "whether a passage answers" in system
            else MADE_UP
            if "please" in asked
            else (FALSE_START if body.get("stream") else UNCITED)
            if "So when" in asked
            else TWICE
            if "exactly" in asked
            else UNCITED
            if "melt" in asked
            else LOOPING
            if "boil at 100" in last.rsplit("Question:", 1)[-1]
            else ANSWER
        )
        if slow:
            text = " ".join(["word"] * 200)
        if not body.get("stream"):
            return {
                "id": "x",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> str:
                payload = {
                    "id": "x",
                    "object": "chat.completion.chunk",
                    "created": 0,
                    "model": MODEL,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                if usage:
                    payload = {**payload, "choices": [], "usage": usage}
                return f"data: {json.dumps(payload)}\n\n"

            yield chunk({"role": "assistant", "content": ""})
            for word in text.split(" "):
                yield chunk({"content": word + " "})
                await asyncio.sleep(0.2 if slow else 0)
            yield chunk({}, "stop")
            yield chunk({}, usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--slow", action="store_true")
    args = parser.parse_args()
    uvicorn.run(build(args.slow), host="127.0.0.1", port=args.port, log_level="warning")
