"""``python -m qwen35_tune`` (also what ``accelerate launch -m qwen35_tune`` runs)."""

import sys

from qwen35_tune.cli import main

sys.exit(main())
