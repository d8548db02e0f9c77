"""The `rollouts-pod-template-hash`: deterministic, derived from the pod template only (spec §0)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["pod_template_hash"]

# Argo's rand.SafeEncodeString alphabet: no vowels (no accidental words), no look-alike characters.
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def _fnv32a(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h ^= byte
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def pod_template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    """FNV-32a over the template's canonical JSON, safe-encoded as Argo does (not byte-identical to Argo)."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    return "".join(_ALPHABET[ord(c) % len(_ALPHABET)] for c in str(_fnv32a(data)))
