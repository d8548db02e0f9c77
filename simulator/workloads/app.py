"""The demo app every pod runs, after Argo's rollouts-demo, as a pure function of (image, env, path).

`argoproj/rollouts-demo:COLOR` answers `GET /color` with `"COLOR"`; `bad-COLOR` fails `ERROR_RATE`
percent of requests (default 50); `slow-COLOR` answers after `LATENCY_MS` (default 2000). Any other
image is a plain web server (nginx in Argo's e2e manifests). Kept free of I/O so the same answers come
from a real pod server and from the virtual-time fetcher used in tests.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Final

__all__ = ["COLORS", "DemoResponse", "ImageInfo", "demo_response", "parse_image"]

COLORS: Final = ("red", "orange", "yellow", "green", "blue", "purple")
DEMO_REPOSITORY: Final = "argoproj/rollouts-demo"


@dataclass(frozen=True, slots=True)
class ImageInfo:
    repository: str
    tag: str
    color: str = ""  # rollouts-demo only
    bad: bool = False
    slow: bool = False
    pullable: bool = True


@dataclass(frozen=True, slots=True)
class DemoResponse:
    status: int
    body: bytes
    content_type: str
    delay: float = 0.0


def parse_image(image: str) -> ImageInfo:
    """What a registry would say about an image: unknown rollouts-demo tags and `*error` tags do not pull."""
    repository, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    repository = repository.removeprefix("docker.io/")
    if repository == DEMO_REPOSITORY:
        for prefix in ("bad-", "slow-", ""):
            color = tag.removeprefix(prefix) if tag.startswith(prefix) else ""
            if color in COLORS:
                return ImageInfo(repository, tag, color, bad=prefix == "bad-", slow=prefix == "slow-")
        return ImageInfo(repository, tag, pullable=False)
    return ImageInfo(repository, tag, pullable=not tag.endswith("error"))


def _number(env: dict[str, str], key: str, default: float) -> float:
    try:
        return float(env.get(key, default))
    except ValueError:
        return default


def demo_response(image: str, env: dict[str, str], path: str, ready: bool, rng: random.Random) -> DemoResponse:
    info = parse_image(image)
    if path == "/healthz":
        return DemoResponse(200 if ready else 503, b"ok" if ready else b"not ready", "text/plain")
    delay = _number(env, "LATENCY_MS", 2000.0) / 1000.0 if info.slow else 0.0
    if info.bad and rng.random() * 100 < _number(env, "ERROR_RATE", 50.0):
        return DemoResponse(500, json.dumps({"error": "simulated failure"}).encode(), "application/json", delay)
    if not info.color:
        return DemoResponse(200, f"{info.repository}:{info.tag}\n".encode(), "text/plain", delay)
    if path == "/color":
        return DemoResponse(200, json.dumps(info.color).encode(), "application/json", delay)
    page = f"<!doctype html><title>{info.color}</title><body style='background:{info.color}'><h1>{info.color}</h1>"
    return DemoResponse(200, page.encode(), "text/html", delay)
