"""Results of a lab run: one Measurement per method, a table and JSON.

Throughput is bytes / median time. Because 1 byte per nanosecond is exactly
1 GB/s (10^9 bytes per second), GB/s is ``nbytes / median_ns``. A method's
ratio is its GB/s over its baseline's GB/s from the same run (>1: faster).
"""
import json
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional

OK = "ok"
UNAVAILABLE = "unavailable"
ERROR = "error"


@dataclass
class Measurement:
    """Measurement(method, baseline, group, description, status, reason, nbytes, times_ns)

    status is "ok" (times_ns holds one entry per repeat), "unavailable"
    (reason says which fastio name is missing) or "error" (reason holds the
    exception).
    """

    method: str
    baseline: Optional[str]
    group: str = ""
    description: str = ""
    status: str = OK
    reason: Optional[str] = None
    nbytes: int = 0
    times_ns: List[int] = field(default_factory=list)

    @property
    def median_ns(self) -> Optional[float]:
        return statistics.median(self.times_ns) if self.times_ns else None

    @property
    def gbps(self) -> Optional[float]:
        """GB/s (10^9 bytes per second) at the median time; None if not measured."""
        if self.status != OK or not self.times_ns:
            return None
        return self.nbytes / max(self.median_ns, 1)


class Results:
    """Results(measurements, info)

    ``info`` holds what the figures depend on: file (path, size, filesystem),
    cache state, machine, repeats. ``table()`` formats them for a terminal,
    ``to_dict()``/``to_json()`` for machines.
    """

    def __init__(self, measurements: List[Measurement], info: Dict[str, Any]):
        self.measurements = list(measurements)
        self.info = dict(info)

    def __iter__(self):
        return iter(self.measurements)

    def __getitem__(self, name: str) -> Measurement:
        for m in self.measurements:
            if m.method == name:
                return m
        raise KeyError(name)

    @property
    def ok(self) -> bool:
        """True when no method raised (unavailable methods are not errors)."""
        return all(m.status != ERROR for m in self.measurements)

    def ratio(self, name: str) -> Optional[float]:
        """ratio(name)

        The method's GB/s over its baseline's GB/s (1.0 for a baseline);
        None when either was not measured.
        """
        m = self[name]
        if m.baseline is None:
            return 1.0 if m.gbps is not None else None
        base = self[m.baseline].gbps
        if m.gbps is None or not base:
            return None
        return m.gbps / base

    # -------------------------------------------------------------- output

    def to_dict(self) -> Dict[str, Any]:
        rows = []
        for m in self.measurements:
            row = asdict(m)
            row["median_ns"] = m.median_ns
            row["gbps"] = m.gbps
            row["ratio"] = self.ratio(m.method)
            rows.append(row)
        return {**self.info, "results": rows}

    def to_json(self, path: Optional[str] = None) -> str:
        """to_json(path=None)

        The results as JSON text; also written to ``path`` when given.
        """
        text = json.dumps(self.to_dict(), indent=2) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    def table(self) -> str:
        """table()

        A plain-text table: method, baseline, GB/s (median), ratio vs
        baseline; then a note for each method not measured.
        """
        head = ("method", "baseline", "GB/s", "ratio")
        rows = []
        notes = []
        for m in self.measurements:
            if m.status == OK:
                gb = f"{m.gbps:.3f}"
                r = self.ratio(m.method)
                ratio = f"{r:.2f}" if r is not None else "-"
            else:
                gb, ratio = m.status, "-"
                notes.append(f"  {m.method}: {m.status}: {m.reason}")
            rows.append((m.method, m.baseline or "(baseline)", gb, ratio))
        widths = [max(len(r[i]) for r in rows + [head]) for i in range(4)]

        def fmt(r):
            return (f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  "
                    f"{r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}")

        lines = [fmt(head), fmt(tuple("-" * w for w in widths))]
        lines += [fmt(r) for r in rows]
        if notes:
            lines += ["", "not measured:"] + notes
        return "\n".join(lines)
