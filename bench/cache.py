"""Where expensive artefacts (worlds, trained networks, samples) are cached, and how they are keyed.

Every cache entry is a directory ``$ASSIMBENCH_CACHE/<kind>/<name>-<hash>/`` whose hash is taken
over the JSON of everything that determines its contents. An entry is *complete* only when its
``complete.json`` marker exists; the marker is written last, so an interrupted writer leaves an
entry that is recognisably incomplete instead of one that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

MARKER = "complete.json"


def cache_root() -> Path:
    """``$ASSIMBENCH_CACHE`` if set, else the user cache dir (``$XDG_CACHE_HOME/assimbench``)."""
    env = os.environ.get("ASSIMBENCH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "assimbench"


def config_hash(settings: dict) -> str:
    """A short stable hash of JSON-serialisable settings (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def entry_dir(kind: str, name: str, settings: dict) -> Path:
    return cache_root() / kind / f"{name}-{config_hash(settings)}"


def read_marker(entry: Path) -> dict | None:
    """The completion marker's contents, or None when the entry is absent or incomplete."""
    path = entry / MARKER
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CacheError(
            f"cache marker {path} is corrupt ({err}); delete {entry} and prepare it again"
        ) from None


def write_marker(entry: Path, contents: dict) -> None:
    """Write the completion marker atomically (write to a temp file, then rename)."""
    tmp = entry / (MARKER + ".tmp")
    tmp.write_text(json.dumps(contents, indent=1, sort_keys=True, default=str))
    os.replace(tmp, entry / MARKER)


def clear(entry: Path) -> None:
    if entry.exists():
        shutil.rmtree(entry)


class CacheError(RuntimeError):
    """A cache entry exists but is incomplete or corrupt."""
