"""``python -m percept.study.bench`` = ``percept bench``."""
import sys

from .cli import main

sys.exit(main())
