"""Run every ``benchmarks/bench_*.py``: ``python -m benchmarks [topic ...] [--out build/benchmarks.json]``.

Each module's ``main()`` prints its own numbers and returns a dict; this runner times it, prints
one table (module, status, wall_s, numbers) and writes everything to JSON. A benchmark that
raises is reported and the run exits non-zero after the others have run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("bench_*.py"))
    if only:
        wanted = [w.removeprefix("bench_").removesuffix(".py") for w in only]
        unknown = [w for w in wanted if f"bench_{w}" not in names]
        if unknown:
            raise SystemExit(f"no benchmark named {', '.join(unknown)}; available: {', '.join(names) or '(none)'}")
        names = [n for n in names if n.removeprefix("bench_") in wanted]
    return names


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_short(v)}" for k, v in value.items()) + "}"
    return str(value)


def run(names: list[str]) -> list[dict]:
    records = []
    for name in names:
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        record: dict = {"benchmark": name}
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            if not callable(getattr(module, "main", None)):
                raise TypeError(f"benchmarks/{name}.py has no main()")
            result = module.main()
            if not isinstance(result, dict):
                raise TypeError(f"{name}.main() must return a dict of measurements, got {type(result).__name__}")
            record |= {"status": "ok", "results": result}
        except Exception as exc:  # report and go on with the others
            traceback.print_exc()
            record |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        record["wall_s"] = round(time.perf_counter() - started, 2)
        records.append(record)
    return records


def table(records: list[dict]) -> str:
    rows = [["benchmark", "status", "wall_s", "results"]]
    for r in records:
        detail = r.get("error") or ", ".join(f"{k}={_short(v)}" for k, v in r.get("results", {}).items())
        rows.append([r["benchmark"], r["status"], f"{r['wall_s']:.1f}", detail])
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row[:3], widths)) + "  " + row[3] for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="topics to run (bench_<topic>.py), default all")
    parser.add_argument("--out", default="build/benchmarks.json", help="where to write the JSON")
    args = parser.parse_args(argv)
    names = discover(args.only)
    if not names:
        print(f"no benchmarks/bench_*.py found in {HERE}")
        return 1
    records = run(names)
    print()
    print(table(records))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch  # only for the record of where the numbers were measured

    meta = {"python": platform.python_version(), "torch": torch.__version__,
            "machine": platform.machine(), "cpus": __import__("os").cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    out.write_text(json.dumps({"meta": meta, "benchmarks": records}, indent=2, default=str))
    print(f"\nwrote {out}")
    return 0 if all(r["status"] == "ok" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
