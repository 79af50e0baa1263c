"""``make bench``: timings under load (bench/run.py), then instructions per request under
callgrind (bench/cost.py), unless BENCH_COST=off (it takes a few minutes more)."""

import os

from bench.cost import main as cost
from bench.run import main as timings

timings()
if os.environ.get("BENCH_COST", "on").strip().lower() not in ("off", "0", "no"):
    print()
    cost()
