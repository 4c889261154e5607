"""``python -m maskzoo {list, shapes, train, eval, predict, convert, demo}``; see :mod:`maskzoo.cli`."""

import sys

from maskzoo.cli import main

if __name__ == "__main__":
    sys.exit(main())
