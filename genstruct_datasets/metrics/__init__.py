"""`evaluate` modules shipped with genstruct_datasets, loadable offline with `evaluate.load(path)`."""

from pathlib import Path

GENSTRUCT_QUALITY = str(Path(__file__).parent / "genstruct_quality")
"""Local path of the `genstruct_quality` measurement: ``evaluate.load(GENSTRUCT_QUALITY)``."""

__all__ = ["GENSTRUCT_QUALITY"]
