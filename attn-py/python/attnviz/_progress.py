"""Progress of long calls: tqdm bars when tqdm is installed (notebook-aware), else nothing."""

from __future__ import annotations

from typing import Callable, Optional


def reporter(progress) -> Optional[Callable[[str, str, int], None]]:
    """The callback the native module calls with ``(kind, stage, value)`` on the calling thread.

    ``progress``: ``True`` (tqdm bars when tqdm is installed), ``False``/``None`` (silent), or a
    callable taking ``(kind, stage, value)`` itself: ``kind`` is ``"start"`` (value: the stage's
    total units), ``"advance"`` (units done so far) or ``"finish"``.
    """
    if callable(progress):
        return progress
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bars = {}

    def report(kind: str, stage: str, value: int) -> None:
        if kind == "start":
            bars[stage] = tqdm(total=value, desc=f"attnviz {stage}", unit="")
        elif kind == "advance" and stage in bars:
            bar = bars[stage]
            bar.update(value - bar.n)
        elif kind == "finish" and stage in bars:
            bars.pop(stage).close()

    return report
