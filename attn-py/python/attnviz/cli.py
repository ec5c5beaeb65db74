"""The ``attnviz`` command of the wheel: the same program as the Rust binary."""

from __future__ import annotations

import sys


def main() -> None:
    from ._attnviz import cli_main

    sys.exit(cli_main(["attnviz", *sys.argv[1:]]))


if __name__ == "__main__":
    main()
