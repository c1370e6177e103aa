"""Results of a lab run: one record per (method, parameters, repetition).

A record (a dict) holds: method, group, baseline, status ('ok',
'unavailable', 'error') and reason; params (pattern, block_size, depth,
size, cache, threads); repetition; backend (what really ran); bytes,
requests, elapsed_ns (the whole call), io_ns (the requests alone: less than
elapsed for methods with a reusable setup, an aio queue), setup_ns,
throughput_Bps and iops (over io_ns); latency_ns (min, mean, p50,
p90, p99, p99.9, max, count) from per-request timings, with latency_timer
saying how they were taken; cpu (user_s, sys_s of this process,
children_user_s, children_sys_s of the child processes reaped during the
call, and ``counted`` saying so); faults (minor, major: both processes;
children_minor, children_major); memory (the state of the memory the
method allocated: 'recycled'); depth_applies;
cache (mode, resident_fraction measured with mincore before the run,
expected, ok); extra (method specific: e.g. where the heap's break moved).

A *workload* is one set of params within one I/O family (group): the table's
winner is per workload, and a method's ratio is its median throughput over
the baseline's at the same params.
"""
import json
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# The Queue's histograms are read the same way; the lab re-exports it.
from ..aio import percentiles_from_hist

OK = "ok"
UNAVAILABLE = "unavailable"
ERROR = "error"

PERCENTILES = (50, 90, 99, 99.9)
#: a row whose fastest repetition is more than this times its slowest is flagged
SPREAD_FLAG = 1.5
_PARAM_KEYS = ("pattern", "block_size", "depth", "size", "cache", "threads")


def _pkey(p: float) -> str:
    return f"p{p:g}"


def latency_summary(lat_ns: Optional[np.ndarray] = None,
                    lat_hist: Optional[Sequence[Tuple[int, int]]] = None) -> Dict[str, Any]:
    """latency_summary(lat_ns=None, lat_hist=None)

    min, mean, p50, p90, p99, p99.9, max and count in ns, from per-request
    latencies (numpy.percentile, linear interpolation) or from a histogram.
    """
    if lat_ns is not None and len(lat_ns):
        a = np.asarray(lat_ns, dtype=np.float64)
        ps = np.percentile(a, PERCENTILES)
        out = {"min": float(a.min()), "mean": float(a.mean()), "max": float(a.max()),
               "count": int(a.size), "source": "per request"}
        out.update({_pkey(p): float(v) for p, v in zip(PERCENTILES, ps)})
        return out
    if lat_hist:
        hist = sorted((int(t), int(c)) for t, c in lat_hist)
        n = sum(c for _, c in hist)
        ps = percentiles_from_hist(hist, PERCENTILES)
        out = {"min": float(hist[0][0]), "max": float(hist[-1][0]),
               "mean": float(sum(t * c for t, c in hist) / max(n, 1)), "count": n,
               "source": "histogram (upper bucket bounds)"}
        out.update({_pkey(p): v for p, v in ps.items()})
        return out
    return {"count": 0, "source": None}


def _fmt_bytes(n: float) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("k", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{int(n) >> shift}{unit}"
    return str(int(n))


def _fmt_us(ns: Optional[float]) -> str:
    if ns is None or ns != ns:
        return "-"
    us = ns / 1e3
    return f"{us:.1f}" if us < 1000 else f"{us:.0f}"


class Results:
    """Results(records, env)

    ``records``: one dict per (method, params, repetition) (see the module
    doc); ``env``: the file (path, size, filesystem), the machine. Output:
    ``table()``, ``to_json()``, ``to_pandas()``, ``plot()``.
    """

    def __init__(self, records: List[Dict[str, Any]], env: Dict[str, Any]):
        self.records = list(records)
        self.env = dict(env)

    def __len__(self):
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def ok(self) -> bool:
        """True when no method failed (unavailable methods are not failures)."""
        return all(r["status"] != ERROR for r in self.records)

    @property
    def methods(self) -> List[str]:
        seen: Dict[str, None] = {}
        for r in self.records:
            seen.setdefault(r["method"], None)
        return list(seen)

    # --------------------------------------------------------- aggregation

    def summary(self, baseline: Optional[str] = None) -> List[Dict[str, Any]]:
        """summary(baseline=None)

        One row per (method, params): status, median throughput and IOPS,
        the throughput's spread over the repetitions (``throughput_min``,
        ``throughput_max``, ``spread`` = max/min, ``spread_flag`` above
        1.5x), median latency percentiles, CPU (this process and its
        children) and faults per repetition (median), whether every cache
        check passed, the ratio to ``baseline`` (a method name; default:
        each method's own baseline) at the same params: ``ratios``, the
        ratios of the two methods' repetitions paired by round, ``ratio``
        their median and ``ratio_min``/``ratio_max`` their range (with no
        pairs, as for a baseline from another run, ``ratio`` is the ratio of
        the median throughputs and ``ratios`` is empty), and ``winner``
        (fastest of its workload). IOPS and percentiles are None for
        methods making one request per repetition (``single_sample``).
        """
        groups: Dict[Tuple, List[Dict[str, Any]]] = {}
        for r in self.records:
            key = (r["method"], tuple(r["params"][k] for k in _PARAM_KEYS))
            groups.setdefault(key, []).append(r)
        rows = []
        reps: Dict[Tuple, Dict[int, float]] = {}
        for (name, pk), recs in groups.items():
            good = [r for r in recs if r["status"] == OK]
            first = recs[0]
            row: Dict[str, Any] = {"method": name, "group": first["group"],
                                   "baseline": first["baseline"],
                                   "params": dict(zip(_PARAM_KEYS, pk)),
                                   "depth_applies": first.get("depth_applies", True),
                                   "runs": len(good)}
            bad = [r for r in recs if r["status"] != OK]
            if not good:
                row.update(status=bad[0]["status"], reason=bad[0]["reason"])
                rows.append(row)
                continue
            row["status"] = OK if not bad else ERROR
            row["reason"] = bad[0]["reason"] if bad else None

            def med(f):
                vals = [f(r) for r in good]
                vals = [v for v in vals if v is not None and v == v]
                return statistics.median(vals) if vals else None
            single = all(r["requests"] <= 1 for r in good)
            tps = [r["throughput_Bps"] for r in good]
            reps[(name, pk)] = {r.get("repetition", i): r["throughput_Bps"]
                                for i, r in enumerate(good)}
            row["backend"] = good[0]["backend"]
            row["throughput_Bps"] = med(lambda r: r["throughput_Bps"])
            row["throughput_min"] = min(tps)
            row["throughput_max"] = max(tps)
            row["spread"] = max(tps) / min(tps) if min(tps) > 0 else None
            row["spread_flag"] = bool(row["spread"] and row["spread"] > SPREAD_FLAG)
            row["single_sample"] = single
            row["iops"] = None if single else med(lambda r: r["iops"])
            row["latency_ns"] = {k: (None if single and k.startswith("p") else
                                     med(lambda r, k=k: r["latency_ns"].get(k)))
                                 for k in ("min", "mean", "max") + tuple(map(_pkey, PERCENTILES))}
            row["latency_timer"] = good[0]["latency_timer"]
            row["cpu_s"] = med(lambda r: _cpu_total(r["cpu"]))
            row["faults_minor"] = med(lambda r: r["faults"]["minor"])
            row["faults_major"] = med(lambda r: r["faults"]["major"])
            checks = [r["cache"].get("ok") for r in good]
            row["cache_ok"] = (None if all(c is None for c in checks)
                               else all(c is not False for c in checks))
            row["cache_resident"] = [r["cache"].get("resident_fraction") for r in good]
            rows.append(row)
        index = {(r["method"], tuple(r["params"].values())): r for r in rows}
        # a synchronous method is found at any depth: depth does not apply to it
        nodepth = {(r["method"], _without_depth(r["params"])): r for r in rows
                   if not r["depth_applies"]}
        best: Dict[Tuple, float] = {}
        for r in rows:
            if r.get("throughput_Bps"):
                wk = (r["group"], tuple(r["params"].values()))
                best[wk] = max(best.get(wk, 0.0), r["throughput_Bps"])
        for r in rows:
            base_name = baseline or r["baseline"] or r["method"]
            base = (index.get((base_name, tuple(r["params"].values())))
                    or nodepth.get((base_name, _without_depth(r["params"]))))
            tp = r.get("throughput_Bps")
            r["ratio_to"] = base_name
            r["ratio"] = (tp / base["throughput_Bps"]
                          if tp and base is not None and base.get("throughput_Bps") else None)
            r["ratio_min"] = r["ratio_max"] = None
            r["ratios"] = []
            if r["ratio"] is not None:
                # Paired by round (the two ran seconds apart, under the same
                # load): the ratio is the median of these, the range their
                # min-max, so the figure always lies within its range. Every
                # table of the lab's figures (benchmarks/make_tables.py,
                # bench_lab_isolation.py) takes them from here.
                mine = reps[(r["method"], tuple(r["params"].values()))]
                theirs = reps[(base["method"], tuple(base["params"].values()))]
                paired = [mine[k] / theirs[k] for k in sorted(mine) if k in theirs and theirs[k]]
                if paired:
                    r["ratios"] = paired
                    r["ratio"] = statistics.median(paired)
                    r["ratio_min"], r["ratio_max"] = min(paired), max(paired)
            wk = (r["group"], tuple(r["params"].values()))
            r["winner"] = bool(tp) and tp == best.get(wk)
        return rows

    # --------------------------------------------------------------- table

    def _cells(self, baseline: Optional[str] = None):
        """The table's header, rows (None: a group heading follows), notes and
        footnotes: what table() and _repr_html_() both show."""
        rows = self.summary(baseline)
        varying = [k for k in _PARAM_KEYS
                   if len({r["params"][k] for r in rows}) > 1]
        n = self.env.get("repeat") or max([r.get("runs", 0) for r in rows] or [0])
        head = (["method"] + varying + ["backend", "MB/s", "MB/s min-max", "IOPS", "p50us",
                                         "p99us", "p99.9us", "cpu_s", "minflt", "majflt",
                                         "ratio", "ratio min-max", "vs"])
        notes = []
        flagged = single = nodepth = False
        out_rows: List[Any] = []
        group = None
        for r in sorted(rows, key=lambda r: (_group_order(r["group"]), _method_order(r["method"]))):
            if r["group"] != group:
                group = r["group"]
                out_rows.append(("group", group))
            pv = [(_fmt_bytes(r["params"][k]) if k in ("block_size", "size")
                   else "n/a" if k == "depth" and not r["depth_applies"]
                   else str(r["params"][k])) for k in varying]
            if r["status"] == OK or r.get("throughput_Bps"):
                lat = r["latency_ns"]
                mark = " !" if r["spread_flag"] else ""
                flagged |= r["spread_flag"]
                single |= r["single_sample"]
                nodepth |= not r["depth_applies"] and (r["params"]["depth"] > 1
                                                      or "depth" in varying)
                rflag = ""
                if r["ratio_min"] is not None and r["ratio_min"] > 0 and \
                        r["ratio_max"] / r["ratio_min"] > SPREAD_FLAG:
                    rflag = " !"
                    flagged = True
                cells = ([("* " if r["winner"] else "  ") + r["method"]] + pv +
                         [str(r["backend"]), f"{r['throughput_Bps'] / 1e6:.0f}",
                          f"{r['throughput_min'] / 1e6:.0f}-{r['throughput_max'] / 1e6:.0f}"
                          + mark,
                          "-" if r["iops"] is None else f"{r['iops']:.0f}",
                          _fmt_us(lat["p50"]), _fmt_us(lat["p99"]),
                          _fmt_us(lat["p99.9"]), f"{r['cpu_s']:.3f}",
                          f"{r['faults_minor']:.0f}", f"{r['faults_major']:.0f}",
                          f"{r['ratio']:.2f}" if r["ratio"] is not None else "-",
                          (f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f}{rflag}"
                           if r["ratio_min"] is not None else "-"),
                          r["ratio_to"]])
                if r["cache_ok"] is False:
                    notes.append(f"{r['method']}: cache check failed: resident fractions "
                                 f"{r['cache_resident']} with cache={r['params']['cache']}")
                if r["status"] != OK:
                    notes.append(f"{r['method']}: some runs failed: {r['reason']}")
            else:
                cells = (["  " + r["method"]] + pv + [r["status"]] +
                         ["-"] * (len(head) - 2 - len(pv)))
                notes.append(f"{r['method']}: {r['status']}: {r['reason']}")
            out_rows.append(cells)
        mem = self.env.get("memory")
        at = [i for i, c in enumerate(out_rows)
              if not isinstance(c, tuple) and _row_group(c, rows) == "malloc/brk"]
        if mem and at and "fresh" in mem:
            # the cost of fresh memory as a figure of its own, beside the
            # allocations (which all run on recycled memory)
            extra = []
            for page, label in (("4k", "4 KiB"), ("2m", "2 MiB")):
                f, r = mem["fresh"][page], mem["recycled"][page]
                extra.append([f"  first_touch.{page}"] + [""] * len(varying) +
                             [f"{label} pages", f"{f['GBps'] * 1e3:.0f}", "-", "-",
                              _fmt_us(f["us_per_page"] * 1e3), "-", "-", "-",
                              f"{f['minor_faults']}", "0",
                              f"{f['GBps'] / r['GBps']:.2f}" if r["GBps"] else "-", "-",
                              "recycled memory"])
            out_rows[at[-1] + 1:at[-1] + 1] = extra
        foot = [f"* fastest in its row and workload; MB/s = 10^6 bytes/s, the median of "
                f"{n} repetition(s); MB/s min-max: the slowest and the fastest repetition; "
                "ratio = median throughput / the 'vs' method's at the same parameters "
                "(>1 faster); ratio min-max: the range of the two methods' ratios, "
                "repetition by repetition (same round)"]
        if flagged:
            foot.append(f"! spread above {SPREAD_FLAG}x (fastest / slowest repetition): "
                        "the figure is not settled; raise --repeat (repeat=) or quiet the "
                        "machine (other programs, power saving)")
        if single:
            foot.append("- IOPS and latency percentiles of a whole-file method come from one "
                        "request per repetition: not shown; its repetitions give the spread")
        if nodepth:
            foot.append("depth n/a: the synchronous methods do one request at a time; "
                        "iodepth does not apply to them (as fio notes for its sync "
                        "engines): run once per block size and pattern")
        if mem and mem.get("policy"):
            foot.append(f"memory: {mem['policy']}")
        if mem and at and "fresh" in mem:
            foot.append(f"first_touch.4k/.2m: the first touch of {_fmt_bytes(mem['bytes'])} of "
                        f"fresh memory ({mem.get('fresh_is', 'first')}; one sample per "
                        "process; p50us: per page), its ratio to recently freed memory's "
                        "(<1: fresh is slower)")
        return head, varying, out_rows, notes, foot

    def table(self, baseline: Optional[str] = None) -> str:
        """table(baseline=None)

        A plain-text table for a terminal, one line per (method, params),
        grouped by I/O family: median MB/s and its min-max over the
        repetitions ('!' when they differ by more than 1.5x), IOPS, latency
        p50/p99/p99.9 in µs ('-' where one request per repetition gives no
        percentile), CPU seconds, page faults, the ratio to ``baseline``
        (default each method's own) with its min-max, and '*' on the winner
        of each workload; then the footnotes, the methods not measured with
        the reason, and failed cache checks.
        """
        head, varying, out_rows, notes, foot = self._cells(baseline)
        cells_only = [c for c in out_rows if not isinstance(c, tuple)]
        widths = [max([len(head[i])] + [len(c[i]) for c in cells_only])
                  for i in range(len(head))]
        left = {0, len(head) - 1} | set(range(1, len(varying) + 1))

        def fmt(cells):
            return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        lines = [fmt(head)]
        for c in out_rows:
            lines.append(f"[{c[1]}]" if isinstance(c, tuple) else fmt(c))
        lines.append("")
        lines += foot
        if notes:
            lines += ["", "notes:"] + ["  " + x for x in notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The table(), as HTML (what a notebook shows for a cell ending in ``res``)."""
        import html
        head, varying, out_rows, notes, foot = self._cells()
        e = html.escape
        out = ["<table>", "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in head)
               + "</tr></thead>", "<tbody>"]
        for c in out_rows:
            if isinstance(c, tuple):
                out.append(f'<tr><th colspan="{len(head)}" style="text-align:left">'
                           f"{e(c[1])}</th></tr>")
            else:
                tds = []
                for i, v in enumerate(c):
                    v = v.strip()
                    if i == 0 and v.startswith("* "):
                        v = f"<b>{e(v)}</b>"
                    else:
                        v = e(v)
                    tds.append(f"<td>{v}</td>")
                out.append("<tr>" + "".join(tds) + "</tr>")
        out.append("</tbody></table>")
        out += [f"<p><small>{e(x)}</small></p>" for x in foot]
        if notes:
            out.append("<p>notes:</p><ul>" + "".join(f"<li>{e(x)}</li>" for x in notes)
                       + "</ul>")
        return "\n".join(out)

    def __repr__(self) -> str:
        rows = [r for r in self.summary() if r.get("throughput_Bps")]
        params = {k: sorted({r["params"][k] for r in rows}) for k in _PARAM_KEYS} if rows \
            else {}
        desc = []
        for k, vals in params.items():
            vs = [(_fmt_bytes(v) if k in ("block_size", "size") else str(v)) for v in vals]
            desc.append(f"{k}={vs[0] if len(vs) == 1 else vs}")
        fastest = max(rows, key=lambda r: r["throughput_Bps"], default=None)
        fast = (f"; fastest {fastest['method']} {fastest['throughput_Bps'] / 1e6:.0f} MB/s"
                if fastest else "")
        return (f"<fastio.lab.Results: {len(self.methods)} methods, "
                f"{self.env.get('repeat', '?')} repetitions, {', '.join(desc)}{fast}>")

    # ---------------------------------------------------------------- JSON

    def to_dict(self) -> Dict[str, Any]:
        """to_dict()

        fio-like: {"fio version", "timestamp", "jobs": [one per record, with
        "jobname", "job options", "read" {io_bytes, bw_bytes, bw (KiB/s),
        iops, runtime (ms), clat_ns {min, max, mean, percentile}}, usr_cpu,
        sys_cpu (% of the run), minf, majf, and "fastio" (the full record)],
        "fastio_env": the environment}.
        """
        jobs = []
        for r in self.records:
            p = r["params"]
            job = {"jobname": r["method"], "groupid": 0, "error": 0 if r["status"] == OK else 1,
                   "job options": {"rw": "read" if p["pattern"] == "seq" else "randread",
                                   "bs": str(p["block_size"]), "iodepth": str(p["depth"]),
                                   "direct": "1" if p["cache"] == "direct" else "0",
                                   "size": str(p["size"]), "numjobs": str(p["threads"]),
                                   "ioengine": f"fastio.{r['method']}"},
                   "fastio": {k: v for k, v in r.items() if k != "check"}}
            if r["status"] == OK:
                lat = r["latency_ns"]
                runtime_ns = r.get("io_ns", r["elapsed_ns"])
                runtime_s = runtime_ns / 1e9
                job["read"] = {
                    "io_bytes": r["bytes"], "io_kbytes": r["bytes"] // 1024,
                    "bw_bytes": int(r["throughput_Bps"]), "bw": int(r["throughput_Bps"] / 1024),
                    "iops": r["iops"], "runtime": int(round(runtime_ns / 1e6)),
                    "total_ios": r["requests"],
                    "clat_ns": {"min": lat.get("min"), "max": lat.get("max"),
                                "mean": lat.get("mean"), "N": lat.get("count"),
                                "percentile": {f"{p:.6f}": lat.get(_pkey(p))
                                               for p in PERCENTILES}},
                }
                cpu = r["cpu"]
                job["usr_cpu"] = 100 * (cpu["user_s"] + cpu.get("children_user_s", 0)) / max(
                    runtime_s, 1e-9)
                job["sys_cpu"] = 100 * (cpu["sys_s"] + cpu.get("children_sys_s", 0)) / max(
                    runtime_s, 1e-9)
                job["minf"] = r["faults"]["minor"]
                job["majf"] = r["faults"]["major"]
            jobs.append(job)
        return {"fio version": "fastio-lab", "timestamp": self.env.get("created"),
                "jobs": jobs, "fastio_env": self.env, "fastio_summary": self.summary()}

    def to_json(self, path: Optional[str] = None) -> str:
        """to_json(path=None)

        The results as fio-like JSON text (see to_dict); also written to
        ``path`` when given.
        """
        text = json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n"
        if path is not None:
            with open(path, "w") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text: str) -> "Results":
        """from_json(text)

        Results back from to_json()'s text."""
        d = json.loads(text)
        return cls([j["fastio"] for j in d["jobs"]], d["fastio_env"])

    # -------------------------------------------------------------- pandas

    def to_pandas(self):
        """to_pandas()

        A pandas DataFrame, one row per record, nested fields flattened
        (params.block_size, latency_ns.p99, ...). Needs pandas.
        """
        try:
            import pandas as pd
        except ImportError as e:
            raise ImportError("Results.to_pandas() needs pandas: pip install pandas") from e
        return pd.json_normalize([{k: v for k, v in r.items() if k != "check"}
                                  for r in self.records])

    # ---------------------------------------------------------------- plot

    def plot(self, kind: str = "bar", *, baseline: Optional[str] = None, ax=None,
             path: Optional[str] = None):
        """plot(kind='bar', *, baseline=None, ax=None, path=None)

        A matplotlib Figure (the optional extra fastio[lab]): 'bar' the
        median throughput per method, grouped by I/O family; 'latency' p50,
        p99 and p99.9 per method (log scale); 'sweep' throughput against
        block size (one line per method and depth). Saved as PNG to
        ``path`` when given.
        """
        from . import plots
        fig = plots.plot(self, kind, baseline=baseline, ax=ax)
        if path is not None:
            fig.savefig(path, dpi=100, bbox_inches="tight")
        return fig


def _cpu_total(cpu: Dict[str, Any]) -> float:
    return sum(cpu.get(k, 0.0) for k in ("user_s", "sys_s", "children_user_s",
                                         "children_sys_s"))


def _without_depth(params: Dict[str, Any]) -> Tuple:
    return tuple(v for k, v in params.items() if k != "depth")


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (bytes, bytearray, memoryview, np.ndarray)):
        return None
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _row_group(cells: List[str], rows: List[Dict[str, Any]]) -> Optional[str]:
    name = cells[0][2:]
    for r in rows:
        if r["method"] == name:
            return r["group"]
    return None


def _method_order(name: str) -> int:
    from .methods import METHODS
    names = list(METHODS)
    return names.index(name) if name in METHODS else len(names)


def _group_order(g: str) -> int:
    from .methods import GROUPS
    return GROUPS.index(g) if g in GROUPS else len(GROUPS)
