"""How `datasets` fingerprints the stages: by the settings that change their results, and no others."""

from __future__ import annotations

from collections.abc import Iterable


def hash_only_results(cls: type, ignored: Iterable[str]) -> None:
    """Leave `ignored` settings (batch sizes, devices, timeouts) out of the `datasets` fingerprint of `cls`.

    A run whose only change is such a setting (a smaller `batch_size` after an out-of-memory error, another GPU)
    then reuses the cached results. Attributes whose name starts with an underscore are left out too. Only
    `datasets`' hashing pickler is told; the pickles that carry a stage to worker processes keep every setting.
    """
    try:
        from datasets.utils._dill import pklregister
    except ImportError:  # a datasets without the hook hashes every setting: caches are reused less often
        return
    ignored = frozenset(ignored)

    @pklregister(cls)
    def _save(pickler, obj) -> None:
        settings = obj.fingerprint_settings() if hasattr(obj, "fingerprint_settings") else vars(obj)
        state = tuple(
            (name, value)
            for name, value in sorted(settings.items())
            if name not in ignored and not name.startswith("_")
        )
        pickler.save_reduce(_settings, (cls.__module__, cls.__qualname__, state), obj=obj)


def _settings(*fingerprint):
    return fingerprint
