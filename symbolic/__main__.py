"""``python -m symbolic`` runs ``nf-ppl verify``."""

import sys

from .cli import main

sys.exit(main(sys.argv[1:]))
