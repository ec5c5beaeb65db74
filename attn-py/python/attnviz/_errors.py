"""Library messages in the terms of the Python call: the pipeline names the command line's flags
(`--layers`, `--out`) and the files it read; a Python caller passed keyword arguments and arrays."""

from __future__ import annotations

import contextlib
import re
from typing import Dict, Optional

from ._attnviz import AttnvizError

_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")


def python_terms(message: str, files: Optional[Dict[str, str]] = None) -> str:
    """``message`` with ``--some-flag`` written ``some_flag`` and each staged file (``--keys
    /tmp/.../keys.npy``) named by what the caller passed (``keys``)."""
    for path, name in (files or {}).items():
        message = re.sub(r"--[a-z-]+ " + re.escape(path), name, message)
        message = message.replace(path, name)
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), message)


@contextlib.contextmanager
def in_python_terms(files: Optional[Dict[str, str]] = None):
    """Re-raises an :class:`AttnvizError` of the block with its message in Python terms."""
    try:
        yield
    except AttnvizError as e:
        raise AttnvizError(python_terms(str(e), files)) from None
