"""``python -m benchmarks [--quick] [--json out.json] [--update-readme] [--only NAMES]``, and
``python -m benchmarks peers [--tasks N] [--width N] [--only SYSTEMS] [--update-readme]``."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import anyio

from benchmarks import lute, peers, peers_report, report
from benchmarks.harness import Result
from benchmarks.scenarios import FULL, QUICK, SCENARIOS, Bench, Sizes


async def run_all(sizes: Sizes, names: list[str], workdir: Path) -> list[Result]:
    from lute_async.logs import configure

    configure(level="WARNING")  # lifecycle info lines would flood the terminal
    bench = Bench(sizes, workdir)
    results: list[Result] = []
    for name in names:
        start = time.perf_counter()
        rows = await getattr(bench, name)()
        print(f"# {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        results.extend(rows)
    return results


def peers_main(argv: list[str]) -> int:
    """The peers comparison: one table, every system's row (or why it was not measured)."""
    keys = [system.key for system in peers.SYSTEMS]
    parser = argparse.ArgumentParser(prog="python -m benchmarks peers", description=peers.__doc__)
    parser.add_argument("--tasks", type=int, default=peers.TASKS, help="tasks per system")
    parser.add_argument("--width", type=int, default=peers.WIDTH, help="tasks in flight")
    parser.add_argument("--only", help=f"comma-separated systems of {','.join(keys)}")
    parser.add_argument("--venv", type=Path, default=peers.VENV, help="the peers' venv")
    parser.add_argument("--timeout", type=float, default=peers.PEER_TIMEOUT, help="s per peer")
    # the stdlib loop: uvloop's own process spawn is the slower floor here (docs/performance.md)
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--update-readme", action="store_true", help="rewrite the peers table")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else keys
    unknown = set(chosen) - set(keys)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    from lute_async.logs import configure

    configure(level="WARNING")
    venv = peers.Venv(args.venv)
    rows = peers.measure(chosen, args.tasks, args.width, venv, args.timeout, args.loop)
    info = peers_report.meta(rows, args.width, args.loop)
    print(peers_report.text_table(rows))
    if args.json:
        peers_report.save_json(args.json, rows, info)
    if args.update_readme:
        peers_report.update_readme(rows, info)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["peers"]:
        return peers_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (under 3 minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--only", help=f"comma-separated scenarios of {','.join(SCENARIOS)}")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--update-readme", action="store_true", help="rewrite README's table")
    parser.add_argument(
        "--with-lute",
        action="store_true",
        help=f"also run spawn and throughput on LUTE ({lute.LUTE_SPEC}, in its own venv)",
    )
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    started = time.perf_counter()
    figures: dict[str, lute.Figure] = {}
    with tempfile.TemporaryDirectory(prefix="lute-bench-") as tmp:
        if args.with_lute:  # first, so that a LUTE that cannot run fails before the long part
            try:
                figures = lute.measure(names, args.quick, Path(tmp) / "lute")
            except lute.LuteUnavailable as error:
                print(f"--with-lute: {error}", file=sys.stderr)
                return 2
        results = anyio.run(
            run_all,
            sizes,
            names,
            Path(tmp),
            backend_options={"use_uvloop": args.loop == "uvloop"},
        )
    lute.attach(results, figures)
    info = report.meta("quick" if args.quick else "full", args.loop)
    if figures:
        info["lute"] = lute.describe(args.quick)
    info["seconds"] = round(time.perf_counter() - started, 1)
    print(report.text_table(results))
    print(f"({info['seconds']} s; {info['install']})")
    if args.json:
        report.save_json(args.json, results, info)
    if args.update_readme:
        report.update_readme(results, info)
    return 0 if all(r.met is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
