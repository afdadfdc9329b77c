#!/usr/bin/env python3
"""Figures from a tsung run against quarry-pool (see BENCHMARKS.md).

report.py fanout tsung.dump        clean-job fan-out spread, from the Recv timestamps
report.py shares tsung-fullstats.log   share acknowledgement latency percentiles
"""
import json
import re
import sys

NOTIFY = re.compile(r'"method":"mining\.notify","params":\["([^"]+)".*,true\]\}')
ENTRY = re.compile(r"(Send|Recv):([0-9.]+):(<[^>]+>):(.*)")


def percentile(ordered, p):
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


def fanout(path):
    """For every clean job after the first: when each connection first read it."""
    arrivals, order, user, at = {}, [], None, None
    with open(path, errors="replace") as dump:
        for line in dump:
            entry = ENTRY.match(line)
            if entry:
                kind, at, user, line = entry.groups()
                user = user if kind == "Recv" else None
            found = user and NOTIFY.search(line)
            if found:
                job = found.group(1)
                if job not in arrivals:
                    arrivals[job] = {}
                    order.append(job)
                arrivals[job].setdefault(user, float(at))
    result = []
    for job in order[1:]:  # the first is the job every miner got on subscribing
        times = sorted(arrivals[job].values())
        spread = [(t - times[0]) * 1000 for t in times]
        result.append({
            "job": job,
            "arrivals": len(times),
            "spread_p50_ms": round(percentile(spread, 50), 1),
            "spread_p99_ms": round(percentile(spread, 99), 1),
            "spread_max_ms": round(spread[-1], 1),
        })
    return result


def shares(path):
    """Latency of every share transaction (send to answer), in ms."""
    text = open(path).read()
    samples = []
    # One sample per line, or a list of them.
    for found in re.finditer(r"\{sample,tr_share,\s*\[?([^\]}]*)\]?\}", text):
        samples += [float(v) for v in found.group(1).split(",") if v.strip()]
    samples.sort()
    return {
        "shares": len(samples),
        "p50_ms": round(percentile(samples, 50), 2),
        "p99_ms": round(percentile(samples, 99), 2),
        "p999_ms": round(percentile(samples, 99.9), 2),
        "max_ms": round(samples[-1], 2),
    }


if __name__ == "__main__":
    mode, path = sys.argv[1], sys.argv[2]
    print(json.dumps({"fanout": fanout, "shares": shares}[mode](path), indent=1))
