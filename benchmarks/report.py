"""The table: printed, saved as JSON, and written into README.md between its markers."""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import Result

START = "<!-- perf-table:start -->"
END = "<!-- perf-table:end -->"
README = Path(__file__).resolve().parent.parent / "README.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    python = platform.python_version()
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}, Python {python}"


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("msg/s", "lines/s"):
        return f"{value:,.0f}"
    if unit == "MB/s" or unit == "tasks/s":
        return f"{value:,.0f}"
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _ratio(result: Result) -> str:
    ratio = result.ratio
    if ratio is None:
        return "-"
    return f"{ratio:.0%} of floor" if result.higher_is_better else f"{ratio:.2f}x floor"


def _met(result: Result) -> str:
    return {True: "met", False: "**missed**", None: "-"}[result.met]


def markdown(results: list[Result], meta: dict[str, Any]) -> str:
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; event loop {meta['loop']}; "
        f"{meta['mode']} run; lute-async {meta['install']}.",
        "",
        "| scenario | lute-async | floor | ratio | target | LUTE | delivered |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lute = _num(r.lute, r.unit) + f" {r.unit}" if r.lute is not None else "not measured"
        lines.append(
            f"| {r.scenario} | {_num(r.lute_async, r.unit)} {r.unit} | "
            f"{_num(r.floor, r.unit) + ' ' + r.unit if r.floor is not None else '-'} | "
            f"{_ratio(r)} | {r.target}: {_met(r)} | {lute} | {r.delivered} |"
        )
    return "\n".join(lines)


def text_table(results: list[Result]) -> str:
    rows = [("scenario", "lute-async", "floor", "ratio", "target", "")]
    for r in results:
        rows.append(
            (
                r.scenario,
                f"{_num(r.lute_async, r.unit)} {r.unit}",
                f"{_num(r.floor, r.unit)} {r.unit}" if r.floor is not None else "-",
                _ratio(r),
                r.target,
                _met(r).strip("*"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows
    )


def meta(mode: str, loop: str) -> dict[str, Any]:
    import lute_async

    origin = Path(lute_async.__file__).resolve()
    cached = (origin.parent / "__pycache__").is_dir()
    install = f"from {origin.parent}" + (" (compiled .pyc)" if cached else " (no .pyc cache)")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine(),
        "loop": loop,
        "mode": mode,
        "install": install,
    }


def save_json(path: str, results: list[Result], info: dict[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump({"meta": info, "results": [r.to_dict() for r in results]}, fh, indent=2)


def update_readme(results: list[Result], info: dict[str, Any], readme: Path = README) -> None:
    """Replace the table between the markers (adding the markers at the end if absent)."""
    block = f"{START}\n{markdown(results, info)}\n{END}"
    text = readme.read_text() if readme.exists() else ""
    if START in text and END in text:
        pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + "## Performance\n\n" + block + "\n"
    readme.write_text(text)
