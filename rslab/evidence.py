"""Evidence over seeds: each notebook's key comparisons, run over several seeds, with a verdict.

One seed is an anecdote (DESIGN.md, "Claims"). ``rslab evidence run`` executes the notebooks
themselves (the papermill runner of :mod:`rslab.notebooks`, ``-p seed=N``) once per seed into
``artifacts/evidence/seed<N>/``, then reads every ``results.json`` back and judges each claim of
``notebooks/profiles/claims.yaml``::

    from rslab import evidence as ev
    claims, settings = ev.load_claims("notebooks/profiles/claims.yaml")
    ev.run_seeds([0, 1, 2], claims=claims, settings=settings, profile="smoke")
    summary = ev.aggregate("artifacts/evidence", claims, profile="smoke")
    print(ev.render_markdown(summary))

The verdict rule (:func:`verdict`). A claim says "metric A is above metric B" (or below, or above
a fixed number, optionally by a margin). Both numbers of a seed come from the same run of the
notebook, so the claim is judged on the **paired** differences ``d_s = A_s - B_s - margin``
(sign flipped for "below"), one per seed: with ``m`` their mean and ``s`` their sample standard
deviation (``ddof=1``),

* **holds** when ``m > 2 s`` (and ``m > 0``): the effect is larger than twice its seed-to-seed
  spread; with 3 seeds this is a one-sided paired t statistic above ``2 sqrt(3) = 3.46``, stricter
  than the 5 % level (2.92 for 2 degrees of freedom);
* **reversed** when ``m < -2 s`` (and ``m < 0``): the opposite of the claim, just as clearly;
* **within noise** otherwise (also when every seed gives exactly the same number for both);
* **too few seeds** with a single paired seed (no spread can be measured); **not measured** when
  no seed has both numbers.

Resuming: a notebook of a seed is skipped when its ``results.json`` is there together with the
runner's ``evidence_run.json`` for the same profile, parameters and code fingerprint (the sha256
of the notebook files and of the library they import, ``rslab/**/*.py``, except this module and
the CLI, which do not change what a notebook computes). When a notebook of a seed runs again,
the later notebooks of that seed run again too (notebook 05 reads 01-03's saved models).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rslab import notebooks as nbs
from rslab.io import write_text_atomically

#: The relations a claim may state: "A above B" (">") or "A below B" ("<").
RELATIONS = (">", "<")
#: How many standard deviations of the paired differences the mean must clear (see :func:`verdict`).
NOISE_FACTOR = 2.0
HOLDS, WITHIN_NOISE, REVERSED, TOO_FEW = "holds", "within noise", "reversed", "too few seeds"
NOT_MEASURED = "not measured"  # no seed has both numbers (e.g. an ablation row that was not run)
VERDICTS = (HOLDS, WITHIN_NOISE, REVERSED, TOO_FEW, NOT_MEASURED)
RUN_RECORD = "evidence_run.json"
DEFAULT_CLAIMS = Path("notebooks") / "profiles" / "claims.yaml"
DEFAULT_OUT = Path("artifacts") / "evidence"
PAGE = Path("book") / "evidence.md"
PAGE_JSON = Path("book") / "evidence.json"
TABLE_START = "<!-- evidence:start -->"
TABLE_END = "<!-- evidence:end -->"
#: Parameter names by which notebooks set their torch CPU threads (the runner sets them to ``threads``).
THREAD_PARAMETERS = ("num_threads", "threads")
#: Files that do not change what a notebook computes (left out of the code fingerprint).
_NOT_FINGERPRINTED = ("rslab/evidence.py", "rslab/cli.py")


# ---------------------------------------------------------------------------------------------
# Claims


@dataclass(frozen=True)
class Claim:
    """One comparison: ``a`` (a results.json metric key) ``relation`` ``b`` (a key or a number),
    by at least ``margin``; ``paper`` says what the paper (or the smoke-profile target) states."""

    notebook: str
    a: str
    relation: str
    b: str | float
    paper: str
    margin: float = 0.0
    label: str = ""

    @property
    def text(self) -> str:
        b = f"{self.b:g}" if isinstance(self.b, (int, float)) else self.b
        margin = f" + {self.margin:g}" if self.margin and self.relation == ">" else (
            f" - {self.margin:g}" if self.margin else "")
        return f"{self.a} {self.relation} {b}{margin}"


def _claim_from_dict(item: Any, where: str) -> Claim:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: each claim must be a mapping with notebook, a, relation, b, paper; got {item!r}")
    missing = [k for k in ("notebook", "a", "relation", "b", "paper") if k not in item]
    unknown = sorted(set(item) - {"notebook", "a", "relation", "b", "paper", "margin", "label"})
    if missing or unknown:
        raise ValueError(f"{where}: claim {item!r} lacks {missing or 'nothing'} and has unknown keys "
                         f"{unknown or 'none'}; "
                         "a claim has notebook, a, relation, b, paper (and optional margin, label)")
    relation = str(item["relation"]).strip()
    if relation not in RELATIONS:
        raise ValueError(f"{where}: relation {relation!r} of claim {item['a']!r} must be one of {RELATIONS}")
    b = item["b"]
    if isinstance(b, bool) or not isinstance(b, (str, int, float)):
        raise ValueError(f"{where}: b of claim {item['a']!r} must be a metric key or a number, got {b!r}")
    margin = item.get("margin", 0.0)
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"{where}: margin of claim {item['a']!r} must be a number >= 0, got {margin!r}")
    if not str(item["a"]).strip() or not str(item["notebook"]).strip():
        raise ValueError(f"{where}: claim {item!r} has an empty notebook or metric a")
    return Claim(notebook=str(item["notebook"]), a=str(item["a"]), relation=relation,
                 b=float(b) if isinstance(b, (int, float)) else str(b), paper=str(item["paper"]),
                 margin=float(margin), label=str(item.get("label", "")))


def load_claims(path: str | Path) -> tuple[list[Claim], dict[str, dict[str, Any]]]:
    """Read a claims file: ``{"settings": {stem: {param: value}}, "claims": [...]}`` -> (claims,
    per-notebook parameter overrides the evidence run adds to the profile's)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"claims file {path} does not exist; write one like notebooks/profiles/claims.yaml")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not isinstance(data.get("claims"), list) or not data["claims"]:
        raise ValueError(f"{path}: needs a non-empty list under 'claims' (and optionally a 'settings' mapping)")
    unknown = sorted(set(data) - {"settings", "claims", "diagnostics"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level keys {unknown}; allowed: settings, claims, diagnostics")
    settings = data.get("settings") or {}
    if not isinstance(settings, dict) or not all(isinstance(v, dict) for v in settings.values()):
        raise ValueError(f"{path}: 'settings' must map notebook stem -> {{parameter: value}}, got {settings!r}")
    claims = [_claim_from_dict(item, f"{path} claim {i}") for i, item in enumerate(data["claims"])]
    return claims, {str(k): dict(v) for k, v in settings.items()}


def load_diagnostics(path: str | Path) -> dict[str, list[str]]:
    """The claims file's optional ``diagnostics: {stem: [metric keys]}``: results.json values shown
    per seed beside the claims (numbers with mean ± std, anything else as written), to explain them."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"claims file {path} does not exist")
    data = (yaml.safe_load(path.read_text()) or {}).get("diagnostics") or {}
    if not isinstance(data, dict) or not all(isinstance(v, list) and all(isinstance(k, str) for k in v)
                                             for v in data.values()):
        raise ValueError(f"{path}: 'diagnostics' must map notebook stem -> [metric keys], got {data!r}")
    return {str(k): list(v) for k, v in data.items()}


# ---------------------------------------------------------------------------------------------
# Statistics and the verdict


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0.0 for one value). Refuses non-finite values."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"mean_std got a non-finite value in {values}; a failed run must not become a number")
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def verdict(diffs: Sequence[float], factor: float = NOISE_FACTOR) -> str:
    """The verdict on paired differences oriented so that positive supports the claim (module
    docstring): holds / within noise / reversed / too few seeds."""
    if not (isinstance(factor, (int, float)) and factor >= 0):
        raise ValueError(f"factor must be a number >= 0, got {factor!r}")
    if len(diffs) < 2:
        return TOO_FEW
    m, s = mean_std(diffs)
    if m > factor * s and m > 0:
        return HOLDS
    if m < -factor * s and m < 0:
        return REVERSED
    return WITHIN_NOISE


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        return None
    return float(value)


def paired_differences(claim: Claim, per_seed: dict[int, dict[str, Any]]) -> tuple[dict[int, float], list[str]]:
    """``{seed: d}`` with d > 0 supporting the claim, from ``{seed: metrics}``; and the problems
    (a seed whose metrics lack a key or hold a non-number is left out and named, never zero-filled)."""
    diffs, problems = {}, []
    for seed, metrics in sorted(per_seed.items()):
        a = _number(metrics.get(claim.a))
        b = claim.b if isinstance(claim.b, float) else _number(metrics.get(claim.b))
        if a is None or b is None:
            bad = [k for k, v in ((claim.a, a), (claim.b, b)) if v is None]
            problems.append(f"seed {seed}: no numeric {', '.join(map(str, bad))}")
            continue
        d = a - b if claim.relation == ">" else b - a
        diffs[seed] = d - claim.margin
    return diffs, problems


# ---------------------------------------------------------------------------------------------
# Running the notebooks over seeds


def code_fingerprint(root: str | Path, notebooks: Iterable[str | Path]) -> str:
    """sha256 over the given notebook files and ``rslab/**/*.py`` (except this module and the CLI)."""
    root = Path(root)
    h = hashlib.sha256()
    files = sorted({Path(nb).resolve() for nb in notebooks})
    files += sorted(p.resolve() for p in (root / "rslab").rglob("*.py")
                    if p.relative_to(root).as_posix() not in _NOT_FINGERPRINTED)
    for p in files:
        h.update(p.relative_to(root.resolve()).as_posix().encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def git_commit(root: str | Path) -> str:
    """``HEAD``'s hash, with ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _record_matches(record_path: Path, results_path: Path, expected: dict[str, Any]) -> bool:
    if not (record_path.is_file() and results_path.is_file()):
        return False
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all(record.get(k) == v for k, v in expected.items())


def run_seeds(
    seeds: Sequence[int],
    *,
    claims: Sequence[Claim],
    settings: dict[str, dict[str, Any]] | None = None,
    profile: str = "smoke",
    only: Iterable[str] | None = None,
    root: str | Path | None = None,
    out_dir: str | Path | None = None,
    threads: int = 1,
    cell_timeout: float | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every notebook named by ``claims`` (or ``only`` of them) once per seed, in notebook
    order, into ``<out_dir>/seed<N>/``; skip what already ran with the same profile, parameters
    and code (module docstring). Returns one record per (seed, notebook): status, wall_s, skipped.
    A failed notebook is logged and recorded; the seed goes on with its remaining notebooks."""
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds!r}; each seed runs once")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    if not claims:
        raise ValueError("no claims: nothing to run (load them with load_claims)")
    root = Path(root).resolve() if root else nbs.find_root()
    out_dir = Path(out_dir).resolve() if out_dir else root / DEFAULT_OUT
    settings = settings or {}
    stems = sorted({c.notebook for c in claims})
    available = {nb.stem: nb for nb in nbs.discover_notebooks(root)}
    missing = [s for s in stems if s not in available]
    if missing:
        raise ValueError(f"claims name notebooks that do not exist: {missing}; available: {sorted(available)}")
    if only:
        picked = {nb.stem for nb in nbs.discover_notebooks(root, only)}
        stems = [s for s in stems if s in picked]
        if not stems:
            raise ValueError(f"--only {' '.join(only)} selects no notebook that a claim names "
                             f"({sorted({c.notebook for c in claims})})")
    unknown = sorted(set(settings) - set(available))
    if unknown:
        raise ValueError(f"claims settings name notebooks that do not exist: {unknown}")
    sections = nbs.load_profile(root, profile)
    # every notebook's parameters are checked before the first kernel starts
    params_of: dict[str, dict[str, Any]] = {}
    for stem in stems:
        nb = available[stem]
        declared = nbs.declared_parameters(nb)
        if "seed" not in declared:
            raise ValueError(f"{stem}: its parameters cell declares no `seed`; add `seed = 0` to it")
        extra = {k: threads for k in THREAD_PARAMETERS if k in declared}
        overrides = {**extra, **settings.get(stem, {})}
        params_of[stem] = nbs.resolve_parameters(nb, profile, sections, overrides)
    fingerprint = code_fingerprint(root, [available[s] for s in stems])
    commit = git_commit(root)
    records: list[dict[str, Any]] = []
    with nbs.scoped_environment({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}):
        for seed in seeds:
            seed_dir = out_dir / f"seed{seed}"
            rerun_rest = False
            for stem in stems:
                params = {**params_of[stem], "seed": seed}
                expected = {"profile": profile, "parameters": params, "fingerprint": fingerprint, "status": "ok"}
                record_path = seed_dir / stem / RUN_RECORD
                if not rerun_rest and _record_matches(record_path, seed_dir / stem / "results.json", expected):
                    log(f"seed {seed} {stem}: done before for this code and settings, skipped")
                    records.append({"seed": seed, "notebook": stem, "status": "ok", "skipped": True})
                    continue
                rerun_rest = True
                record_path.unlink(missing_ok=True)
                log(f"seed {seed} {stem}: running ({', '.join(f'{k}={v!r}' for k, v in params.items())})")
                result = nbs.execute_notebook(available[stem], profile, root=root, build_dir=seed_dir / "build",
                                              artifacts_dir=seed_dir, parameters=params,
                                              cell_timeout=cell_timeout if cell_timeout is not None
                                              else nbs.DEFAULT_CELL_TIMEOUT.get(profile))
                record = {"seed": seed, "notebook": stem, "status": result.status, "skipped": False,
                          "wall_s": result.wall_s, "runner_wall_s": result.runner_wall_s, "error": result.error}
                records.append(record)
                log(f"seed {seed} {stem}: {result.status} in {result.runner_wall_s} s"
                    + (f": {result.error}" if result.error else ""))
                if result.ok:
                    write_text_atomically(record_path, json.dumps({
                        **expected, "seed": seed, "notebook": stem, "commit": commit, "threads": threads,
                        "wall_s": result.wall_s, "runner_wall_s": result.runner_wall_s,
                        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    }, indent=2))
    return records


# ---------------------------------------------------------------------------------------------
# Aggregation


@dataclass
class Summary:
    """What :func:`aggregate` found: per-notebook rows (metric -> per-seed values) and claims."""

    profile: str
    seeds: list[int]
    rows: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)
    wall_s: dict[str, dict[int, float]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    failed_runs: list[dict[str, Any]] = field(default_factory=list)  # set by run_and_write
    diagnostics: dict[str, dict[str, dict[int, Any]]] = field(default_factory=dict)  # stem -> key -> seed -> value

    @staticmethod
    def _stats(values: dict[int, Any]) -> dict[str, float]:
        numbers = [_number(v) for v in values.values()]
        if not numbers or any(x is None for x in numbers):
            return {}
        m, s = mean_std(numbers)
        return {"mean": m, "std": s, "n": len(numbers)}

    def to_dict(self) -> dict[str, Any]:
        rows = {nb: {k: {"mean": mean_std(list(v.values()))[0], "std": mean_std(list(v.values()))[1],
                         "n": len(v), "per_seed": {str(s): x for s, x in sorted(v.items())}}
                     for k, v in metrics.items() if v}
                for nb, metrics in self.rows.items()}
        walls = {nb: {"mean": mean_std(list(v.values()))[0], "std": mean_std(list(v.values()))[1],
                      "per_seed": {str(s): x for s, x in sorted(v.items())}} for nb, v in self.wall_s.items() if v}
        per_seed_total = {}
        for nb_walls in self.wall_s.values():
            for s, x in nb_walls.items():
                per_seed_total[str(s)] = per_seed_total.get(str(s), 0.0) + x
        diagnostics = {nb: {k: {"per_seed": {str(s): x for s, x in sorted(v.items())},
                                **self._stats(v)} for k, v in keys.items()}
                       for nb, keys in self.diagnostics.items()}
        return {"profile": self.profile, "seeds": self.seeds, "rule": RULE_TEXT, "noise_factor": NOISE_FACTOR,
                "rows": rows, "claims": self.claims, "diagnostics": diagnostics, "wall_s": walls,
                "wall_s_per_seed_total": per_seed_total,
                "runner_wall_s_total": round(sum(r.get("runner_wall_s") or 0.0 for r in self.runs), 1),
                "runs": self.runs, "problems": self.problems}


RULE_TEXT = (
    "Each claim is judged on its paired differences d = A - B - margin, one per seed (sign flipped for '<'), "
    "because both numbers of a seed come from the same run. With m their mean and s their sample standard "
    "deviation: holds when m > 2 s and m > 0; reversed when m < -2 s and m < 0; within noise otherwise; "
    "too few seeds with one seed. With 3 seeds, 'holds' is a one-sided paired t statistic above 3.46.")


def aggregate(out_dir: str | Path, claims: Sequence[Claim], profile: str = "smoke",
              seeds: Iterable[int] | None = None, diagnostics: dict[str, list[str]] | None = None) -> Summary:
    """Read ``<out_dir>/seed<N>/<stem>/results.json`` (every seed found, or ``seeds``), keep those
    of ``profile``, and compute the rows (every metric a claim names) and each claim's verdict."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"no evidence runs under {out_dir}; run `rslab evidence run` first")
    if not claims:
        raise ValueError("no claims to aggregate")
    found = sorted(int(p.name[4:]) for p in out_dir.glob("seed*") if p.is_dir() and p.name[4:].isdigit())
    wanted = sorted(set(seeds)) if seeds is not None else found
    summary = Summary(profile=profile, seeds=[])
    stems = sorted({c.notebook for c in claims})
    metrics_of: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in stems}
    for seed in wanted:
        for stem in stems:
            path = out_dir / f"seed{seed}" / stem / "results.json"
            if not path.is_file():
                continue
            try:
                payload = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                summary.problems.append(f"{path}: unreadable ({exc})")
                continue
            if payload.get("profile") != profile:
                summary.problems.append(f"{path}: profile {payload.get('profile')!r}, not {profile!r}; left out")
                continue
            if payload.get("seed") not in (None, seed):
                summary.problems.append(f"{path}: written by seed {payload.get('seed')}, not {seed}; left out")
                continue
            metrics_of[stem][seed] = dict(payload.get("metrics") or {})
            if _number(payload.get("wall_s")) is not None:
                summary.wall_s.setdefault(stem, {})[seed] = float(payload["wall_s"])
            record = out_dir / f"seed{seed}" / stem / RUN_RECORD
            if record.is_file():
                try:
                    r = json.loads(record.read_text())
                    summary.runs.append({k: r.get(k) for k in ("seed", "notebook", "commit", "fingerprint",
                                                               "threads", "finished", "runner_wall_s")})
                except (OSError, json.JSONDecodeError):
                    pass
    summary.seeds = sorted({s for per in metrics_of.values() for s in per})
    for stem in stems:
        keys = []
        for c in claims:
            if c.notebook == stem:
                keys += [c.a] + ([c.b] if isinstance(c.b, str) else [])
        rows: dict[str, dict[int, float]] = {}
        for key in dict.fromkeys(keys):
            rows[key] = {s: v for s, m in metrics_of[stem].items() if (v := _number(m.get(key))) is not None}
        summary.rows[stem] = rows
    for stem, keys in (diagnostics or {}).items():
        per = metrics_of.get(stem, {})
        summary.diagnostics[stem] = {k: {s: m[k] for s, m in per.items() if k in m} for k in keys}
    for c in claims:
        diffs, problems = paired_differences(c, metrics_of[c.notebook])
        entry = {"notebook": c.notebook, "claim": c.text, "label": c.label, "paper": c.paper,
                 "n": len(diffs), "per_seed": {str(s): d for s, d in diffs.items()},
                 "verdict": verdict(list(diffs.values())) if diffs else NOT_MEASURED}
        if diffs:
            entry["mean_diff"], entry["std_diff"] = mean_std(list(diffs.values()))
        if problems:
            entry["problems"] = problems
        summary.claims.append(entry)
    return summary


# ---------------------------------------------------------------------------------------------
# Rendering


def _pm(mean: float, std: float, n: int) -> str:
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f} (1 seed)"


def render_markdown(summary: Summary) -> str:
    """The evidence tables (Markdown): the rule, one table of rows per notebook, one of claims."""
    d = summary.to_dict()
    lines = [f"Profile `{summary.profile}`, seeds {', '.join(map(str, summary.seeds)) or '(none)'}; "
             f"mean ± sample standard deviation over seeds.", "", f"**Verdict rule.** {RULE_TEXT}", ""]
    for stem in sorted(summary.rows):
        rows = d["rows"].get(stem, {})
        wall = d["wall_s"].get(stem)
        lines += [f"### {stem}", ""]
        if not rows:
            lines += ["(no results for this notebook yet)", ""]
            continue
        if wall:
            lines += [f"Notebook wall time: {wall['mean']:.0f} ± {wall['std']:.0f} s per seed.", ""]
        seeds = summary.seeds
        lines += ["| metric | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for key, r in rows.items():
            per = [f"{r['per_seed'][str(s)]:.3f}" if str(s) in r["per_seed"] else "-" for s in seeds]
            lines.append(f"| `{key}` | {_pm(r['mean'], r['std'], r['n'])} | " + " | ".join(per) + " |")
        lines += ["", "| claim | paired difference (mean ± std) | seeds | verdict | paper / target |",
                  "|---|---|---|---|---|"]
        for c in d["claims"]:
            if c["notebook"] != stem:
                continue
            diff = _pm(c["mean_diff"], c["std_diff"], c["n"]) if c["n"] else "-"
            name = f"{c['label']}: `{c['claim']}`" if c["label"] else f"`{c['claim']}`"
            lines.append(f"| {name} | {diff} | {c['n']} | **{c['verdict']}** | {c['paper']} |")
        diag = d["diagnostics"].get(stem)
        if diag:
            lines += ["", "Diagnostics (not claims; they help explain the verdicts):", "",
                      "| value | mean ± std | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                      "|---|---|" + "---|" * len(seeds)]
            for key, r in diag.items():
                fmt = lambda v: f"{v:.3f}" if _number(v) is not None else f"`{v}`"  # noqa: E731
                per = [fmt(r["per_seed"][str(s)]) if str(s) in r["per_seed"] else "-" for s in seeds]
                stat = _pm(r["mean"], r["std"], r["n"]) if "mean" in r else "-"
                lines.append(f"| `{key}` | {stat} | " + " | ".join(per) + " |")
        lines.append("")
    totals = d["wall_s_per_seed_total"]
    if totals:
        n_nb = len(summary.rows)
        count = {s: sum(str(s) in w["per_seed"] for w in d["wall_s"].values()) for s in totals}
        lines += ["Sum of the notebooks' `wall_s` per seed: " + ", ".join(
            f"seed {s}: {v:.0f} s" + (f" ({count[s]} of {n_nb} notebooks so far)" if count[s] < n_nb else "")
            for s, v in sorted(totals.items(), key=lambda kv: int(kv[0]))) + "."]
    counts = {v: sum(c["verdict"] == v for c in d["claims"]) for v in VERDICTS}
    lines += ["", "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "."]
    if summary.problems:
        lines += ["", "Left out: " + "; ".join(summary.problems)]
    return "\n".join(lines).rstrip() + "\n"


def write_page(summary: Summary, root: str | Path, *, wall_s: float | None = None,
               extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Place the tables between the evidence markers of ``book/evidence.md`` (the prose around them
    stays) and write ``book/evidence.json`` (date, commit, profile, seeds, wall time, everything)."""
    root = Path(root)
    page, page_json = root / PAGE, root / PAGE_JSON
    table = render_markdown(summary)
    if page.is_file():
        text = page.read_text()
        start, end = text.find(TABLE_START), text.find(TABLE_END)
        if start < 0 or end < start:
            raise ValueError(f"{page} has no '{TABLE_START}' ... '{TABLE_END}' block; add the two markers "
                             "where the evidence tables belong")
        text = text[: start + len(TABLE_START)] + "\n" + table + text[end:]
    else:
        text = f"# Evidence over seeds\n\n{TABLE_START}\n{table}{TABLE_END}\n"
    write_text_atomically(page, text)
    payload = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "commit": git_commit(root), **summary.to_dict()}
    if wall_s is not None:
        payload["runner_wall_s"] = wall_s
    payload.update(extra or {})
    write_text_atomically(page_json, json.dumps(payload, indent=2) + "\n")
    return page, page_json


def notebook_evidence(stem: str, root: str | Path | None = None) -> str:
    """The verdicts of notebook ``stem``'s claims from the committed ``book/evidence.json``, as
    Markdown: what a notebook's conclusion quotes (one seed is an anecdote). Says so plainly when
    the page has not been made, or was made from another commit than the notebook's code."""
    try:
        root = Path(root).resolve() if root else nbs.find_root()
    except FileNotFoundError:  # a notebook copied out of the checkout: say where the page lives
        return f"*The evidence page is `{PAGE_JSON}` in the rslab checkout; run this notebook from inside it.*"
    path = root / PAGE_JSON
    if not path.is_file():
        return f"*No evidence over seeds yet: `make evidence` writes `{PAGE_JSON}`.*"
    data = json.loads(path.read_text())
    claims = [c for c in data.get("claims", []) if c.get("notebook") == stem]
    if not claims:
        return f"*`{PAGE_JSON}` holds no claim of {stem}: run `rslab evidence run --only {stem[:2]}`.*"
    seeds = ", ".join(str(s) for s in data.get("seeds", []))
    commits = sorted({str(r.get("commit"))[:7] for r in data.get("runs", []) if r.get("notebook") == stem})
    lines = [f"Over seeds {seeds} ({data.get('profile')} profile, `{PAGE}`, notebook runs at commit "
             f"{', '.join(commits) or '?'}, page written {str(data.get('date'))[:10]}); the difference is "
             "A - B per seed, mean ± std:", "", "| claim | A - B | verdict |", "|---|---|---|"]
    for c in claims:
        diff = ("-" if c.get("mean_diff") is None
                else f"{c['mean_diff']:+.3f} ± {c['std_diff']:.3f}" if c.get("std_diff") is not None
                else f"{c['mean_diff']:+.3f}")
        lines.append(f"| {c['label']} | {diff} | **{c['verdict']}** |")
    return "\n".join(lines) + "\n"


def run_and_write(seeds: Sequence[int], *, claims_path: str | Path | None = None, profile: str = "smoke",
                  only: Iterable[str] | None = None, root: str | Path | None = None,
                  out_dir: str | Path | None = None, threads: int = 1, write: bool = True,
                  log: Callable[[str], None] = print) -> Summary:
    """``rslab evidence run``: :func:`run_seeds`, then :func:`aggregate` and (``write``) :func:`write_page`."""
    root = Path(root).resolve() if root else nbs.find_root()
    claims, settings = load_claims(claims_path or root / DEFAULT_CLAIMS)
    out_dir = Path(out_dir).resolve() if out_dir else root / DEFAULT_OUT
    t0 = time.perf_counter()
    records = run_seeds(seeds, claims=claims, settings=settings, profile=profile, only=only, root=root,
                        out_dir=out_dir, threads=threads, log=log)
    claims_file = claims_path or root / DEFAULT_CLAIMS
    summary = aggregate(out_dir, claims, profile=profile, diagnostics=load_diagnostics(claims_file))
    summary.failed_runs = [r for r in records if r["status"] != "ok"]
    if write:
        write_page(summary, root, wall_s=round(time.perf_counter() - t0, 1),
                   extra={"threads": threads, "settings": settings, "last_run": records})
    return summary


__all__ = [
    "Claim", "Summary", "load_claims", "load_diagnostics", "mean_std", "verdict", "paired_differences", "run_seeds",
    "aggregate", "render_markdown", "write_page", "run_and_write", "code_fingerprint", "RULE_TEXT",
    "notebook_evidence",
]
