"""The resume signature: what makes a study's results comparable, and nothing else.

Covered: search space, the fixed config (base + champion + window, no trial values), scoring and
constraints, data content and window, code version, mode. Not covered: the stop policy, worker
count and storage URL, so a run can be extended or scaled out.
"""

from __future__ import annotations

from typing import Any

from genesis_core.errors import GenesisError


class ResumeBlocked(GenesisError):
    exit_code = 2


SIGNATURE_ATTR = "genesis_signature"
SPACE_ATTR = "genesis_space"


def signature_diff(stored: dict[str, Any], current: dict[str, Any], stored_space: dict[str, Any], space: dict[str, Any]) -> list[str]:
    """Human-readable differences; a changed search space names each changed parameter."""
    lines = []
    for key in sorted(set(stored) | set(current)):
        if stored.get(key) == current.get(key):
            continue
        if key == "search_space":
            for path in sorted(set(stored_space) | set(space)):
                if stored_space.get(path) != space.get(path):
                    lines.append(f"search_space: {path}: {stored_space.get(path, '(absent)')} -> {space.get(path, '(absent)')}")
        else:
            lines.append(f"{key}: {str(stored.get(key, '(absent)'))[:16]} -> {str(current.get(key, '(absent)'))[:16]}")
    return lines
