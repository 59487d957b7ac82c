"""One range check for every numeric setting, so that each says the same thing the same way."""

from __future__ import annotations

import math
import os
from typing import Any

from .errors import InvalidConfigError


def check_number(
    name: str,
    value: Any,
    *,
    integer: bool = False,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    optional: bool = False,
    rule: str = "",
    detail: str = "",
    hint: str = "",
) -> None:
    """Raise [`InvalidConfigError`] unless `value` is a finite number in range (a bool is never a number here).

    The message names the setting, the rule and the value: ``"num_samples must be a positive integer, got 0."``.

    Args:
        name (`str`): the setting's name, as the user passes it.
        value (`Any`): what was given.
        integer (`bool`, *optional*, defaults to `False`): only an `int` will do.
        minimum (`float`, *optional*): the smallest value allowed.
        maximum (`float`, *optional*): the largest value allowed.
        above (`float`, *optional*): the value must be larger than this (an open bound).
        below (`float`, *optional*): the value must be smaller than this (an open bound).
        optional (`bool`, *optional*, defaults to `False`): None is allowed.
        rule (`str`, *optional*): the rule in words, where the bounds alone would say it less well (``"a positive
            number of rows or None"``).
        detail (`str`, *optional*): said after the rule: what the number counts (``"seconds"``), what a value means.
        hint (`str`, *optional*): what to do, appended to the message.

    Raises:
        [`InvalidConfigError`]: `value` is out of range, not finite, or not a number of the right kind; its `setting`
            is `name`, so that a caller that knows the setting by another name can say that one.

    Example:

    ```py
    >>> check_number("top_p", 0.9, above=0, maximum=1)
    >>> check_number("batch_size", 0, integer=True, minimum=1)
    Traceback (most recent call last):
    genstruct_datasets.errors.InvalidConfigError: batch_size must be a positive integer, got 0.
    ```
    """
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (minimum is None or value >= minimum) and (maximum is None or value <= maximum)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if ok:
        return
    rule = rule or _rule(integer=integer, minimum=minimum, maximum=maximum, above=above, below=below)
    if isinstance(value, float) and math.isinf(value) and "finite" not in rule:
        rule = f"finite and {rule}"
    detail = f" {detail}" if detail else ""
    tail = f" {hint}" if hint else ""
    error = InvalidConfigError(f"{name} must be {rule}{detail}, got {value!r}.{tail}")
    error.setting = name
    raise error


def check_workers(name: str, value: Any) -> None:
    """Raise [`InvalidConfigError`] unless `value` is None or a number of worker processes this machine can run: a
    positive integer no larger than its CPUs (`os.cpu_count()`), since each worker is a process with a model of its
    own.

    Example:

    ```py
    >>> check_workers("num_proc", 2)
    >>> check_workers("num_proc", 10**9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    genstruct_datasets.errors.InvalidConfigError: num_proc must be at most ... (worker processes, ...), got 1000000000.
    ```
    """
    check_number(name, value, integer=True, minimum=1, optional=True, detail="(worker processes)")
    cpus = os.cpu_count() or 1
    check_number(
        name,
        value,
        maximum=cpus,
        optional=True,
        rule=f"at most {cpus}",
        detail=f"(worker processes, one model each: this machine has {cpus} CPUs)",
    )


def _rule(
    *, integer: bool, minimum: float | None, maximum: float | None, above: float | None, below: float | None
) -> str:
    if above is not None and below is not None:
        return f"in ({above:g}, {below:g})"
    if integer and maximum is None and above is None and below is None and minimum in (0, 1):
        return "a positive integer" if minimum == 1 else "a non-negative integer"
    if above is not None and maximum is not None:
        return f"in ({above:g}, {maximum:g}]"
    if minimum is not None and maximum is not None:
        return f"{'an integer ' if integer else ''}in [{minimum:g}, {maximum:g}]"
    if above is not None:
        return f"> {above:g}"
    if minimum is not None:
        return f"{'an integer ' if integer else ''}>= {minimum:g}"
    if maximum is not None:
        return f"{'an integer ' if integer else ''}<= {maximum:g}"
    return "an integer" if integer else "a finite number"
