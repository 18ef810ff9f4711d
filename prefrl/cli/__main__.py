"""``python -m prefrl.cli`` runs the ``prefrl`` command."""

import sys

from prefrl.cli import main

sys.exit(main())
