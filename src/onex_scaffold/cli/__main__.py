"""``python -m onex_scaffold.cli``: the same as the ``onex-node`` command."""

from __future__ import annotations

import sys

from onex_scaffold.cli import main

sys.exit(main())
