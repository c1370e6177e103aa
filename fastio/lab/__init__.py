"""fastio.lab: every way of moving bytes, measured side by side like fio.

    >>> from fastio import lab
    >>> res = lab.run(pattern="rand", block_size="4k", size="64M", cache="warm", repeat=3)
    >>> print(res.table())                 # winner per workload, ratios
    >>> res.to_json("out.json")            # close to fio's --output-format=json
    >>> res.plot("latency")                # a matplotlib Figure
    >>> lab.sweep("psync", block_size=["4k", "64k", "1M"])

methods.py holds the methods by I/O family (read/write, mmap, aio,
sendfile, shared memory, malloc/brk), runner.py the cache and memory
control, the rounds and the measurement,
results.py the records and their outputs, cli.py ``python -m fastio``.
"""
from .methods import GROUPS, METHODS, Job, Method, Outcome, register, selected
from .results import Results, latency_summary, percentiles_from_hist
from .runner import (CACHE_MODES, PATTERNS, Progress, cache_state, evict_cache,
                     filesystem_of, machine_info, make_file, memory_cost, offsets_for,
                     parse_size, run, set_cache, sweep, warm_cache)

__all__ = ["CACHE_MODES", "GROUPS", "METHODS", "Job", "Method", "Outcome", "PATTERNS",
           "Progress", "Results", "cache_state", "evict_cache", "filesystem_of",
           "latency_summary", "machine_info", "make_file", "memory_cost", "offsets_for",
           "parse_size", "percentiles_from_hist", "register", "run", "selected", "set_cache",
           "sweep", "warm_cache"]
