"""``python -m riffmask.cli`` (and ``accelerate launch -m riffmask.cli``): the ``riffmask`` command."""

import sys

from riffmask.cli import main

sys.exit(main())
