"""What every benchmark script writes beside its table: the machine it ran on and its rows, as JSON."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def machine(**details: Any) -> dict[str, Any]:
    """The platform, processor and CPU count, with `details` added (or replacing them)."""
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        **details,
    }


def write(path: str | Path, result: dict[str, Any]) -> None:
    """Write `result` as indented JSON to `path` (its folder made if needed) and say where."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {path}")
