"""``python -m percept.bench`` = ``percept bench``."""
import sys

from .run import main

sys.exit(main())
