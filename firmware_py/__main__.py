"""``python -m firmware_py`` == ``genre-edge``."""

import sys

from firmware_py.cli import main

sys.exit(main())
