"""``python -m mmlib`` is the ``mmlib`` command."""

import sys

from mmlib.cli import main

if __name__ == "__main__":
    sys.exit(main())
