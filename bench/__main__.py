"""``python -m bench``: the benchmark suite (see bench/run.py, or ``scripts/bench --help``)."""

import sys

from bench.run import main

sys.exit(main())
