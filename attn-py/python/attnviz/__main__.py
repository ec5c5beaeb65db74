"""``python -m attnviz``: the ``attnviz`` command."""

from .cli import main

main()
