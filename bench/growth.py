"""Cost growth benchmark: the webhook fan-out rate of one alert at growing numbers of targets,
with `bench.fanout`'s service and raw legs at each size; the rate should stay flat.

    .venv/bin/python -m bench.growth [--sizes 1000,10000,100000] [--store postgresql|sqlite]
                                     [--runs 3] [--runs-largest 1] [--timeout 3600] [--warm]

Each size runs `bench.fanout --channel webhook --targets SIZE` (`--runs` times, the largest
size `--runs-largest` times: it takes long) and prints the median rates per size, with each
size's service rate over the smallest size's (target: within 20 % of 1.0) and over the raw
leg of the same size (the raw leg shows how much of a change is the machine's: `s/raw vs
first` is the growth with that taken out). With `--warm`, each run times the second alert of
a service, as `bench.fanout --warm` does: a freshly started service's first alert also pays
for preparing its statements and opening its connections, which weighs most at the smallest
size. The table and bench/results/growth-<store>[-warm].json are written after each size, so
the sizes done stand if a later one does not finish. Every size shares the overall timeout.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from bench import fanout
from bench.common import Deadline, machine_context, run_loop, write_results
from bench.rawlegs import WEBHOOK
from dissemination.logs import configure

FLAT = 0.2
"""How far from the smallest size's rate a size may be and still count as flat."""


def sizes(text: str) -> list[int]:
    values = sorted({int(part) for part in text.split(",") if part.strip()})
    if not values or values[0] < 1 or values[-1] > 100_000:
        raise argparse.ArgumentTypeError("sizes between 1 and 100000, comma-separated")
    return values


async def run(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    deadline = Deadline.after(args.timeout)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        if deadline.expired():
            print(f"timeout: {size:,} not run", flush=True)
            break
        runs = args.runs_largest if size == args.sizes[-1] else args.runs
        print(f"\n{size:,} targets, {runs} run(s):", flush=True)
        leg_args = fanout._parser().parse_args(
            [
                "--targets",
                str(size),
                "--channel",
                WEBHOOK,
                "--store",
                args.store,
                "--runs",
                str(runs),
                "--timeout",
                str(max(1.0, deadline.remaining())),
                *(["--warm"] if args.warm else []),
            ]
        )
        (report,) = await fanout.run(leg_args)
        raw, service, ratio = report.medians()
        rows.append(
            {
                "targets": size,
                "runs": runs,
                "service_rates": [round(leg.rate, 1) for leg in report.service],
                "service_notes": [leg.note for leg in report.service],
                "raw_rates": [round(leg.rate, 1) for leg in report.raw],
                "service_median": service,
                "raw_median": raw,
                "service_over_raw": ratio,
            }
        )
        summarize(args, rows, context)  # after each size: a later one may not finish in time
    return rows


def summarize(
    args: argparse.Namespace, rows: list[dict[str, Any]], context: dict[str, Any]
) -> None:
    """Print the table of the sizes done so far and write them to the results."""
    print(f"\nwebhook fan-out rate by number of targets, store {args.store}, medians:")
    print(
        f"{'targets':>8} {'runs':>5} {'service/s':>10} {'raw/s':>10} {'s/raw':>6} {'vs first':>9}"
        f" {'s/raw vs first':>15}"
    )
    first, first_share = rows[0]["service_median"], rows[0]["service_over_raw"]
    for row in rows:
        service, share = row["service_median"], row["service_over_raw"]
        growth = service / first if service and first else None
        row["service_over_first"] = growth
        row["share_over_first"] = share / first_share if share and first_share else None
        row["flat"] = growth is not None and abs(growth - 1.0) <= FLAT
        print(
            f"{row['targets']:>8,} {row['runs']:>5} {service or 0:>10,.0f} "
            f"{row['raw_median'] or 0:>10,.0f} {share or 0:>6.3f} {growth or 0:>9.3f}"
            f" {row['share_over_first'] or 0:>15.3f}"
        )
    results = {
        "benchmark": "growth",
        "store": args.store,
        "warm": args.warm,
        "channel": WEBHOOK,
        "flat_within": FLAT,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": rows,
        "context": context,
    }
    write_results(f"growth-{args.store}" + ("-warm" if args.warm else ""), results)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--sizes", type=sizes, default=sizes("1000,10000,100000"))
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--runs-largest", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--warm", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not (1 <= args.runs <= 10 and 1 <= args.runs_largest <= 10 and args.timeout > 0):
        print("need 1 <= --runs, --runs-largest <= 10 and --timeout > 0", file=sys.stderr)
        return 2
    configure("WARNING", "console", "bench")
    run_loop(run(args, machine_context()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
