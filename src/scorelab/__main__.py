"""``python -m scorelab`` (also what ``torchrun -m scorelab`` runs)."""

import sys

from .cli import main

sys.exit(main())
