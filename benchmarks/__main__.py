"""``make bench``: every measurement in a process of its own, then one table of ratios.

Each (subject, scenario) pair runs as ``python -m benchmarks.measure SUBJECT SCENARIO``
in a fresh process, one after the other, so runs never slow each other down. The
baselines are measured in the same run as the bot, against the same loopback fakes;
the table shows the bot's figures, the baselines' and the ratios the targets are set in
(README, "Performance"). The last line is the whole result as JSON.
"""

from __future__ import annotations

import compileall
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# scenario -> {subject: repetitions}; the median of the repetitions is kept. The default
# baseline takes 40 s per run at 0.2 s latency (one update at a time), so it runs once.
PLAN: dict[str, dict[str, int]] = {
    "burst0": {"bot": 3, "concurrent": 3, "baseline": 3},
    "burst200": {"bot": 3, "concurrent": 3, "baseline": 1},
    "broadcast": {"bot": 1, "baseline": 1},
    "doc": {"bot": 1, "concurrent": 1, "baseline": 1},
    "intake": {"bot": 3, "floor": 3},
}


@dataclass(frozen=True)
class Target:
    """One row: ``bot figure / baseline figure`` must be ``op`` ``limit`` (no op: shown only)."""

    label: str
    scenario: str
    metric: str
    against: str
    op: str = ""  # ">=", "<=" or "" (no target from the issue: the figure is context)
    limit: float = 0.0

    def check(self, ratio: float) -> bool | None:
        if not self.op:
            return None
        return ratio >= self.limit if self.op == ">=" else ratio <= self.limit


TARGETS = (
    Target("commands/s, latency 0", "burst0", "cmds_per_s", "concurrent", ">=", 2.0),
    Target("commands/s, latency 0.2 s", "burst200", "cmds_per_s", "concurrent", ">=", 2.0),
    Target("commands/s, latency 0.2 s", "burst200", "cmds_per_s", "baseline", ">=", 20.0),
    Target("p50 ms, latency 0", "burst0", "p50_ms", "concurrent"),
    Target("p99 ms, latency 0", "burst0", "p99_ms", "concurrent", "<=", 0.6),
    Target("p50 ms, latency 0.2 s", "burst200", "p50_ms", "concurrent"),
    Target("p99 ms, latency 0.2 s", "burst200", "p99_ms", "concurrent", "<=", 0.6),
    Target("peak RSS MB (burst)", "burst0", "peak_rss_mb", "concurrent", "<=", 1.2),
    Target("start to first poll ms", "burst0", "startup_ms", "concurrent", "<=", 1.5),
    Target("200-number /wa at 0.1 s, s", "broadcast", "broadcast_s", "baseline"),
    Target("15 MB /doc: RSS growth MB", "doc", "doc_rss_growth_mb", "concurrent"),
    Target("CPU s, burst at latency 0", "burst0", "cpu_s", "concurrent"),
    Target("CPU s, burst at latency 0.2 s", "burst200", "cpu_s", "concurrent"),
)
INTAKE_TARGETS = (
    Target("alert notifications/s", "intake", "per_s", "floor", ">=", 0.5),
    Target("p99 ms to the 200", "intake", "p99_200_ms", "floor", "<=", 2.0),
)
ABSOLUTE: dict[str, Callable[[dict[str, Any]], tuple[str, bool]]] = {
    "200-number broadcast <= 1.5 s": lambda r: (
        f"{r['broadcast']['bot']['broadcast_s']:.2f} s",
        r["broadcast"]["bot"]["broadcast_s"] <= 1.5,
    ),
    "15 MB /doc growth <= 0.2x file": lambda r: (
        f"{r['doc']['bot']['doc_growth_x_file']:.2f}x",
        r["doc"]["bot"]["doc_growth_x_file"] <= 0.2,
    ),
    "alert 200 -> first page p99 <= 250 ms": lambda r: (
        f"{r['intake']['bot']['p99_page_ms']:.0f} ms",
        r["intake"]["bot"]["p99_page_ms"] <= 250,
    ),
}


def measure_once(subject: str, scenario: str) -> dict[str, Any]:
    """One measurement in a fresh process; its last stdout line is a JSON object."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.measure", subject, scenario],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"benchmark {subject} {scenario} failed: {tail[0]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def run_all() -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario, repeats in PLAN.items():
        for round_ in range(max(repeats.values())):  # interleaved: drift hits all alike
            for subject in [s for s, n in repeats.items() if round_ < n]:
                started = time.perf_counter()
                figures = measure_once(subject, scenario)
                print(
                    f"  {scenario:<9} {subject:<10} {time.perf_counter() - started:5.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
                results.setdefault(scenario, {}).setdefault(subject, {}).setdefault("runs", [])
                results[scenario][subject]["runs"].append(figures)
    return {
        scenario: {subject: median_of(data["runs"]) for subject, data in by_subject.items()}
        for scenario, by_subject in results.items()
    }


def table(results: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], bool]:
    rows = [
        "| figure | bot | concurrent baseline | default baseline | ratio | target | ok |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    all_ok = True
    for target in TARGETS:
        figures = results[target.scenario]
        bot = figures["bot"][target.metric]
        ratio = bot / figures[target.against][target.metric]
        ok = target.check(ratio)
        all_ok &= ok is not False
        shown = [
            f"{figures[s][target.metric]:.1f}" if s in figures else "—"
            for s in ("bot", "concurrent", "baseline")
        ]
        rows.append(
            f"| {target.label} | {' | '.join(shown)} | {ratio:.2f}× {target.against} "
            f"| {f'{target.op} {target.limit:g}×' if target.op else ''} "
            f"| {'' if ok is None else 'yes' if ok else 'NO'} |"
        )
    rows += ["", "| alert intake (500 at once) | bot | floor | ratio | target | ok |"]
    rows.append("| --- | ---: | ---: | ---: | --- | --- |")
    for target in INTAKE_TARGETS:
        figures = results[target.scenario]
        bot, floor = figures["bot"][target.metric], figures["floor"][target.metric]
        ok = target.check(bot / floor)
        all_ok &= ok is not False
        rows.append(
            f"| {target.label} | {bot:.1f} | {floor:.1f} | {bot / floor:.2f}× floor "
            f"| {target.op} {target.limit:g}× | {'yes' if ok else 'NO'} |"
        )
    rows += ["", "| absolute | bot | | | | | ok |", "| --- | ---: | --- | --- | --- | --- | --- |"]
    for label, check in ABSOLUTE.items():
        value, ok = check(results)
        all_ok &= ok
        rows.append(f"| {label} | {value} | | | | | {'yes' if ok else 'NO'} |")
    return rows, all_ok


def main() -> int:
    began = time.perf_counter()
    # pip byte-compiles what it installs, the baselines' code (PTB, httpx) among it; our
    # editable install is not, and PYTHONDONTWRITEBYTECODE may stop Python caching it:
    # compile it as a wheel install would, so start-up compares like with like
    compileall.compile_dir("bot", quiet=1)
    compileall.compile_dir("benchmarks", quiet=1)
    print("measuring (each run in its own process)…", file=sys.stderr, flush=True)
    results = run_all()
    rows, all_ok = table(results)
    print("\n".join(rows))
    print(f"\n{'all targets met' if all_ok else 'some targets missed'}", end="")
    print(f" in {time.perf_counter() - began:.0f} s on this machine")
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
