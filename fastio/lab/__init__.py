"""fastio.lab: measure ways of moving bytes against each other.

The core is small on purpose: a registry of *methods* (methods.py: each is a
function ``f(path, size) -> bytes processed``, optionally naming the baseline
it is compared with), a *runner* (runner.py: warm-up, interleaved repeats
timed with time.perf_counter_ns, the machine and cache state) and *Results*
(results.py: a table and JSON). ``python -m fastio`` is its command line
(cli.py).

    >>> from fastio import lab
    >>> res = lab.run(path, repeat=3)          # every registered method
    >>> print(res.table())
    >>> res.to_json("out.json")
"""
from .methods import METHODS, Method, register, selected
from .results import Measurement, Results
from .runner import cache_state, filesystem_of, machine_info, run, warm_cache

__all__ = ["METHODS", "Measurement", "Method", "Results", "cache_state",
           "filesystem_of", "machine_info", "register", "run", "selected",
           "warm_cache"]
