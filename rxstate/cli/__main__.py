"""``python -m rxstate.cli``: the ``rxstate`` command."""

import sys

from rxstate.cli.main import main

sys.exit(main())
