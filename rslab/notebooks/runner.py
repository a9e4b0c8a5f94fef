"""The papermill runner (what ``rslab notebooks run`` calls): discover notebooks, resolve profiles,
execute, summarise results.

    from rslab.notebooks import run_notebooks, results_table
    results = run_notebooks(profile="ci", only=["03"])   # papermill, in order
    print(results_table(results))

Profiles live in ``notebooks/profiles/{ci,smoke,full}.yaml``: one section per notebook stem
holding papermill parameters, plus an optional ``defaults`` section applied to every notebook
whose parameters cell declares the name. ``profile`` is always injected. Runs outside the
notebooks (CLI, tests); papermill, nbformat and yaml are imported inside the functions that use
them so that ``import rslab`` stays light.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("ci", "smoke", "full")
NOTEBOOK_STEMS = (
    "00_data_tour",
    "01_sar_alignment",
    "02_qsacl_pretraining",
    "03_vita_sga",
    "04_rs2sam2",
    "05_coninfer_inference",
)
# The metric keys each notebook must write (DESIGN.md, "Metric keys in results.json").
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "00_data_tour": ("scenes_per_s",),
    "01_sar_alignment": (
        "sar2opt_r1_before",
        "sar2opt_r1_after",
        "sar_zeroshot_acc_before",
        "sar_zeroshot_acc_after",
    ),
    "02_qsacl_pretraining": (
        "probe_miou_random",
        "probe_miou_contrastive",
        "probe_miou_qsacl",
        "probe_miou_qsacl_sar",
    ),
    "03_vita_sga": (
        "miou_visual",
        "miou_text",
        "miou_fused",
        "miou_text_unseen_synonyms",
        "miou_sar_fused",
    ),
    "04_rs2sam2": ("miou_baseline", "miou_full", "oiou_full", "pr50_full", "pr70_full", "pr90_full"),
    "05_coninfer_inference": ("miou_prior", "miou_context_only", "miou_decoupled", "miou_joint"),
}
DEFAULTS_KEY = "defaults"  # profile section applied to every notebook that declares the name
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"
_STEM_RE = re.compile(r"^\d{2}_[A-Za-z0-9_]+$")


def find_root(start: str | Path | None = None) -> Path:
    """Walk up from ``start`` (default: cwd) to the directory holding ``notebooks/`` and
    ``pyproject.toml``: the repository root."""
    here = Path(start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "notebooks").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    raise FileNotFoundError(
        f"no rslab repository found at or above {here}: looked for a directory holding both "
        "'notebooks/' and 'pyproject.toml'. Run the command from inside the rslab checkout "
        "(e.g. `cd rslab && rslab notebooks run`)."
    )


def discover_notebooks(root: str | Path, only: Iterable[str] | None = None) -> list[Path]:
    """``notebooks/NN_*.ipynb`` in order. ``only`` filters by prefix ("03") or stem
    ("03_vita_sga"); a filter that matches nothing is an error (it is almost always a typo)."""
    folder = Path(root) / "notebooks"
    found = sorted(p for p in folder.glob("*.ipynb") if _STEM_RE.match(p.stem))
    if not only:
        return found
    wanted = [str(w).strip() for w in only if str(w).strip()]
    selected = [p for p in found if any(p.stem == w or p.stem.startswith(w) for w in wanted)]
    unmatched = [w for w in wanted if not any(p.stem == w or p.stem.startswith(w) for p in found)]
    if unmatched:
        names = ", ".join(p.stem for p in found) or "(none)"
        raise ValueError(f"--only {' '.join(unmatched)} matches no notebook; available: {names}")
    return selected


def load_profile(root: str | Path, profile: str) -> dict[str, dict[str, Any]]:
    """Read ``notebooks/profiles/<profile>.yaml``: notebook stem -> papermill parameters
    (plus the optional ``defaults`` section). Empty sections become ``{}``."""
    import yaml

    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    path = Path(root) / "notebooks" / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"profile file {path} is missing; create it with one section per notebook stem")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must be a mapping of notebook stem -> parameters, got {type(data).__name__}")
    sections: dict[str, dict[str, Any]] = {}
    for key, section in data.items():
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ValueError(f"{path}: section {key!r} must be a mapping of parameter -> value, got {section!r}")
        sections[str(key)] = dict(section)
    return sections


def parameters_cell_count(notebook: str | Path) -> int:
    """How many cells carry the papermill ``parameters`` tag."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    return sum("parameters" in cell.get("metadata", {}).get("tags", []) for cell in nb.cells)


def declared_parameters(notebook: str | Path) -> set[str]:
    """Names assigned in the notebook's ``parameters`` cell (as papermill parses them)."""
    import papermill

    return set(papermill.inspect_notebook(str(notebook)).keys())


#: Settings shared by every notebook that reads them (the profiles' ``defaults`` section): a ``-p``
#: override of one of these goes to each selected notebook that declares it and skips the others.
SHARED_PARAMETERS = ("device", "data_root", "weights_dir", "allow_download")


def split_overrides(
    overrides: dict[str, Any] | None, notebooks: Iterable[str | Path]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """``-p`` overrides -> (for every notebook, per notebook stem). ``"03.steps"`` or
    ``"03_vita_sga.steps"`` targets one notebook (a prefix must match exactly one selected
    notebook); a plain ``"steps"`` targets all of them."""
    stems = [Path(nb).stem for nb in notebooks]
    common: dict[str, Any] = {}
    scoped: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        prefix, dot, name = str(key).rpartition(".")
        if not dot:
            common[key] = value
            continue
        matches = [s for s in stems if s == prefix or s.startswith(prefix)]
        if len(matches) != 1 or not name.isidentifier():
            raise ValueError(
                f"-p {key}: {prefix!r} must name exactly one selected notebook (selected: {', '.join(stems)}) "
                f"and {name!r} a parameter; matched {matches or 'none'}"
            )
        scoped.setdefault(matches[0], {})[name] = value
    return common, scoped


def resolve_parameters(
    notebook: str | Path,
    profile: str,
    sections: dict[str, dict[str, Any]],
    overrides: dict[str, Any] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The parameters papermill injects: ``defaults`` (names the notebook declares), then the
    notebook's own section, then command-line ``overrides``; ``profile`` always.

    No silent settings: a name in the notebook's own section, or an override, that its parameters
    cell does not declare is a ``ValueError`` naming the notebook and every such key (a typo or a
    stale key would otherwise change nothing without a word). Exceptions, which go only to the
    notebooks that declare them: the ``defaults`` section's names and :data:`SHARED_PARAMETERS`
    in overrides. ``overrides`` may hold scoped keys (``"03.steps"``, see :func:`split_overrides`);
    those of other notebooks are left out here (:func:`run_notebooks` checks that each names one).
    ``warn`` is kept for callers of the earlier signature and receives nothing."""
    stem = Path(notebook).stem
    declared = declared_parameters(notebook)
    common = {k: v for k, v in (overrides or {}).items() if "." not in str(k)}
    mine = {str(k).rpartition(".")[2]: v for k, v in (overrides or {}).items()
            if "." in str(k) and (stem == str(k).rpartition(".")[0] or stem.startswith(str(k).rpartition(".")[0]))}
    shared = set(SHARED_PARAMETERS) | set(sections.get(DEFAULTS_KEY, {}))
    params: dict[str, Any] = {k: v for k, v in sections.get(DEFAULTS_KEY, {}).items() if k in declared}
    own = sections.get(stem, {})
    bad = [f"profile {profile!r} section {stem} sets {k!r}" for k in own if k not in declared]
    bad += [f"-p {k}" for k in common if k not in declared and k not in shared]
    bad += [f"-p {stem}.{k}" for k in mine if k not in declared]
    if bad:
        raise ValueError(
            f"{stem}: {'; '.join(bad)}, but its parameters cell declares no such name "
            f"(it declares: {', '.join(sorted(declared))}). Fix the name or remove the setting."
        )
    params.update(own)
    params.update({k: v for k, v in common.items() if k in declared})
    params.update(mine)
    params["profile"] = profile
    return params


def check_device(profile: str, notebook_params: dict[str, dict[str, Any]]) -> None:
    """The full profile trains for hours on a GPU: without a usable CUDA device it runs only where
    ``device=cpu`` was given explicitly (``-p device=cpu`` or the profile file). Raises a
    ``ValueError`` naming the notebooks that would otherwise fall back to the CPU, and says when
    torch is a CUDA build that cannot reach its driver. Notebooks whose parameters cell declares no
    ``device`` (nothing to put on a GPU, e.g. the data tour) are not checked."""
    if profile != "full":
        return
    import torch

    if torch.cuda.is_available():
        return
    # a notebook without a `device` parameter trains nothing on an accelerator (e.g. the data tour)
    wrong = [stem for stem, params in notebook_params.items()
             if "device" in params and str(params["device"]).lower() != "cpu"]
    if not wrong:
        return
    if torch.version.cuda:
        why = (f"this torch is a CUDA {torch.version.cuda} build but sees no GPU (no driver, or "
               "CUDA_VISIBLE_DEVICES hides it: check `nvidia-smi`)")
    else:
        why = f"this torch {torch.__version__} is a CPU-only build"
    raise ValueError(
        f"the full profile needs a GPU and {why}. To run it on the CPU anyway (days for the paper settings), "
        f"pass -p device=cpu explicitly; notebooks that would fall back: {', '.join(wrong)}"
    )


def resolve_device(device: str | None, profile: str = "smoke"):
    """The ``torch.device`` a notebook trains on: ``"auto"``/None -> CUDA when available, else the
    CPU, except on the full profile, where falling back to the CPU is an error (pass
    ``device="cpu"`` explicitly); an explicit ``"cuda..."`` without a usable GPU is an error too."""
    import torch

    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if profile == "full":
            raise RuntimeError(
                "device='auto' on the full profile and torch sees no GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
                "set device='cpu' explicitly to run the full profile on the CPU"
            )
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} but torch sees no GPU (CUDA build: {torch.version.cuda or 'no'})")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return dev


@dataclass
class NotebookResult:
    """One notebook's outcome: from a run, or read back from ``artifacts/``."""

    name: str
    profile: str
    status: str  # "ok", "failed", "no results", "not run"
    wall_s: float | None = None  # the notebook's own wall_s (results.json), else the runner's
    metrics: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    error: str | None = None
    executed: Path | None = None
    runner_wall_s: float | None = None  # kernel start to finish, as the runner measured it
    timed_out: bool = False  # failed because a cell ran past the runner's cell timeout

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "notebook": self.name,
            "profile": self.profile,
            "status": self.status,
            "wall_s": self.wall_s,
            "device": self.device,
            "metrics": self.metrics,
            "error": self.error,
            "executed": str(self.executed) if self.executed else None,
            "runner_wall_s": self.runner_wall_s,
        }


def read_results(artifacts_dir: str | Path, name: str, profile: str | None = None) -> NotebookResult:
    """Read ``<artifacts_dir>/<name>/results.json`` into a NotebookResult. Status is "not run"
    when the file is absent and "failed" when it is unreadable, from another profile than
    ``profile`` (when given) or lacks a metric key DESIGN.md requires."""
    path = Path(artifacts_dir) / name / "results.json"
    if not path.is_file():
        return NotebookResult(name, profile or "-", "not run", error=f"no {path}")
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return NotebookResult(name, profile or "-", "failed", error=f"unreadable {path}: {exc}")
    result = NotebookResult(
        name=name,
        profile=str(payload.get("profile", "-")),
        status="ok",
        wall_s=payload.get("wall_s"),
        metrics=dict(payload.get("metrics") or {}),
        device=payload.get("device"),
    )
    missing = [k for k in METRIC_KEYS.get(name, ()) if k not in result.metrics]
    if profile is not None and result.profile != profile:
        result.status, result.error = "failed", f"{path} is from profile {result.profile!r}, not {profile!r}"
    elif missing:
        result.status, result.error = "failed", f"{path} lacks metric keys {', '.join(missing)} (DESIGN.md)"
    return result


@contextmanager
def scoped_environment(values: dict[str, str]) -> Iterator[None]:
    """Temporarily set environment variables (the kernel inherits them when it starts)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _describe_cell_error(exc: Any, notebook: Path) -> str:
    """'cell[7] (In [5]) `first source line`: ValueError: message'; the 0-based cell index counts
    cells of the source notebook (papermill's own index counts its injected-parameters cell too)."""
    import nbformat

    index = int(exc.cell_index)
    try:
        cells = nbformat.read(str(notebook), as_version=4).cells
        tagged = [i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
        injected_at = tagged[0] + 1 if tagged else 0
        if index > injected_at:
            index -= 1
    except Exception:  # the report must not fail on a notebook we could read a moment ago
        pass
    lines = [ln.strip() for ln in str(exc.source or "").splitlines() if ln.strip()]
    code = [ln for ln in lines if not ln.startswith("#")]  # the first line of code, not a comment
    first = (code or lines or ["(empty cell)"])[0]
    # IPython's traceback shows the cell's failing line as "----> 3 code": name it when it is not the first
    failing = ""
    for frame in exc.traceback or []:
        match = re.search(r"^-+> (\d+) (.*)$", re.sub(r"\x1b\[[0-9;]*m", "", frame), re.M)
        if match:
            if match.group(2).strip() != first:
                failing = f", line {match.group(1)} `{match.group(2).strip()}`"
            break
    evalue = str(exc.evalue).strip().splitlines()
    return f"cell[{index}] (In [{exc.exec_count}]) `{first}`{failing}: {exc.ename}: {evalue[0] if evalue else ''}"


def _check_kernel(log: Callable[[str], None]) -> None:
    """Warn when the ``python3`` kernel would run another interpreter than this one (a user-level
    kernelspec from another environment shadows the venv's): imports would then fail or differ."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        exe = Path(KernelSpecManager().get_kernel_spec("python3").argv[0])
    except Exception as exc:  # no kernelspec at all: papermill will say so precisely
        log(f"warning: cannot inspect the python3 kernel ({type(exc).__name__}: {exc})")
        return
    # compare the bin folders: venv interpreters are symlinks to one base python
    if exe.is_absolute() and exe.parent.resolve() != Path(sys.executable).parent.resolve():
        log(f"warning: the 'python3' Jupyter kernel runs {exe}, not this interpreter ({sys.executable}); "
            f"register this one with `{sys.executable} -m ipykernel install --sys-prefix --name python3`")


def execute_notebook(
    notebook: str | Path,
    profile: str = "smoke",
    *,
    root: str | Path | None = None,
    build_dir: str | Path | None = None,
    artifacts_dir: str | Path | None = None,
    parameters: dict[str, Any] | None = None,
    cell_timeout: float | None = None,
) -> NotebookResult:
    """Execute one notebook with papermill (kernel ``python3``, cwd = repo root) into
    ``<build_dir>/notebooks/<stem>.ipynb`` and read back ``<artifacts_dir>/<stem>/results.json``.

    A stale results.json is removed first, so a notebook that runs but writes none is reported
    as a failure. ``parameters`` default to the profile's (see `resolve_parameters`)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise FileNotFoundError(f"notebook {notebook} does not exist")
    root = Path(root).resolve() if root else find_root(notebook.parent)
    build_dir = Path(build_dir).resolve() if build_dir else root / "build"
    artifacts_dir = Path(artifacts_dir).resolve() if artifacts_dir else root / "artifacts"
    stem = notebook.stem
    n_params = parameters_cell_count(notebook)
    if n_params != 1:
        return NotebookResult(
            stem, profile, "failed",
            error=f"{notebook.name} has {n_params} cells tagged 'parameters'; it needs exactly one "
            "(papermill injects the profile after it)",
        )
    if parameters is None:
        parameters = resolve_parameters(notebook, profile, load_profile(root, profile))
    parameters = {**parameters, "profile": profile}

    out = build_dir / "notebooks" / notebook.name
    out.parent.mkdir(parents=True, exist_ok=True)
    stale = artifacts_dir / stem / "results.json"
    stale.unlink(missing_ok=True)
    env = {
        "RSLAB_ARTIFACTS_DIR": str(artifacts_dir),
        # no ipywidgets in headless runs: their comm messages can hang the client (rslab.viz.widgets)
        "RSLAB_HEADLESS": "1",  # = rslab.viz.widgets.HEADLESS_ENV (not imported: it would load matplotlib)
        # Headless, but figures must still land in the executed notebook: the inline backend
        # (Agg underneath). A plain MPLBACKEND=Agg, as `make` exports, would leave no figures.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0"),
    }
    started = time.perf_counter()
    error, timed_out = None, False
    try:
        with scoped_environment(env):
            papermill.execute_notebook(
                str(notebook),
                str(out),
                parameters=parameters,
                kernel_name="python3",
                cwd=str(root),
                progress_bar=sys.stderr.isatty(),
                execution_timeout=cell_timeout,
            )
    except PapermillExecutionError as exc:
        error = _describe_cell_error(exc, notebook)
    except TimeoutError:  # nbclient's CellTimeoutError
        error, timed_out = f"a cell ran longer than the {cell_timeout:g} s cell timeout", True
    except Exception as exc:  # kernel died, unreadable notebook: still one line per notebook
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    runner_wall = round(time.perf_counter() - started, 2)
    if error is not None:
        return NotebookResult(stem, profile, "failed", wall_s=runner_wall, error=error, executed=out,
                              runner_wall_s=runner_wall, timed_out=timed_out)
    result = read_results(artifacts_dir, stem, profile)
    result.executed, result.runner_wall_s = out, runner_wall
    if result.status == "not run":
        result.status = "no results"
        result.error = f"ran without error but wrote no {stale} (call run.save_results(...) at the end)"
    if result.wall_s is None:
        result.wall_s = runner_wall
    return result


#: Per-cell time limit (s) of each profile when the caller gives none. A cell of the smoke profile
#: takes at most a few minutes; one that runs for 15 means a hung kernel (seen once: an idle kernel
#: that never answered a widget cell), which would otherwise block a headless run forever.
#: ``full`` trains for hours on a GPU: no limit.
DEFAULT_CELL_TIMEOUT: dict[str, float | None] = {"ci": 600.0, "smoke": 900.0, "full": None}


def run_notebooks(
    profile: str = "smoke",
    only: Iterable[str] | None = None,
    *,
    keep_going: bool = False,
    root: str | Path | None = None,
    build_dir: str | Path | None = None,
    artifacts_dir: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    cell_timeout: float | None = None,
    retry_timeouts: int = 1,
    log: Callable[[str], None] = print,
) -> list[NotebookResult]:
    """Run the selected notebooks in order on ``profile``; stop at the first failure unless
    ``keep_going``. Writes ``<build_dir>/results_summary.{json,md}`` and returns the results.

    ``cell_timeout``: seconds one cell may run (None: the profile's :data:`DEFAULT_CELL_TIMEOUT`;
    0: no limit). A notebook that failed only because a cell ran past it is run again from the
    start up to ``retry_timeouts`` times, and the log says so (a hung kernel is rare and not the
    notebook's fault; a notebook that is merely too slow fails again and is reported)."""
    if cell_timeout is None:
        cell_timeout = DEFAULT_CELL_TIMEOUT.get(profile)
    elif cell_timeout < 0:
        raise ValueError(f"cell_timeout must be >= 0 seconds (0 for no limit), got {cell_timeout}")
    cell_timeout = cell_timeout or None
    if retry_timeouts < 0:
        raise ValueError(f"retry_timeouts must be >= 0, got {retry_timeouts}")
    root = Path(root).resolve() if root else find_root()
    build_dir = Path(build_dir).resolve() if build_dir else root / "build"
    notebooks = discover_notebooks(root, only)
    if not notebooks:
        raise FileNotFoundError(f"no notebooks matching NN_*.ipynb in {root / 'notebooks'}")
    sections = load_profile(root, profile)
    _check_kernel(log)
    common, _ = split_overrides(overrides, notebooks)  # a bad scoped key fails here
    for key in common:
        if not any(key in declared_parameters(nb) for nb in notebooks):
            raise ValueError(f"-p {key}: no selected notebook ({', '.join(nb.stem for nb in notebooks)}) "
                             "declares this parameter")
    # every notebook's parameters are checked before the first kernel starts: a typo in the last
    # notebook's settings must not surface hours into a full-profile run
    problems, all_params = [], {}
    for nb in notebooks:
        try:
            all_params[nb.stem] = resolve_parameters(nb, profile, sections, overrides)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("\n".join(problems))
    check_device(profile, all_params)
    results: list[NotebookResult] = []
    for i, nb in enumerate(notebooks):
        params = all_params[nb.stem]
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        log(f"[{i + 1}/{len(notebooks)}] {nb.stem} ({shown})")
        for attempt in range(retry_timeouts + 1):
            result = execute_notebook(
                nb, profile, root=root, build_dir=build_dir, artifacts_dir=artifacts_dir,
                parameters=params, cell_timeout=cell_timeout,
            )
            if not result.timed_out or attempt == retry_timeouts:
                break
            log(f"    {result.error}; running {nb.stem} again from the start")
        results.append(result)
        wall = f"{result.runner_wall_s:.1f}s" if result.runner_wall_s is not None else "-"
        log(f"    {result.status} in {wall}" + (f": {result.error}" if result.error else ""))
        if not result.ok and not keep_going:
            results += [NotebookResult(rest.stem, profile, "not run", error="skipped after a failure")
                        for rest in notebooks[i + 1:]]
            break
    write_summary(results, build_dir)
    return results


def collect_results(
    root: str | Path | None = None, artifacts_dir: str | Path | None = None
) -> list[NotebookResult]:
    """Results as they stand in ``artifacts/`` (no execution): the six tutorial notebooks and any
    other discovered one (status "not run" without a results.json), plus any other
    ``artifacts/NN_*/results.json``."""
    root = Path(root).resolve() if root else find_root()
    artifacts_dir = Path(artifacts_dir) if artifacts_dir else root / "artifacts"
    names = set(NOTEBOOK_STEMS) | {nb.stem for nb in discover_notebooks(root)}
    if artifacts_dir.is_dir():
        names |= {p.parent.name for p in artifacts_dir.glob("*/results.json") if _STEM_RE.match(p.parent.name)}
    return [read_results(artifacts_dir, name) for name in sorted(names)]


def _format_value(key: str, value: Any) -> str:
    if isinstance(value, (bool, int)) or not isinstance(value, float):
        return str(value)
    if key.endswith("_s"):  # rates and seconds: a few significant digits
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{value:.3f}"  # scores in [0, 1]


def format_metrics(name: str, metrics: dict[str, Any], all_keys: bool = False) -> str:
    """The DESIGN.md key metrics of a notebook as ``key=value, ...`` (all metrics if asked,
    or when the notebook has no declared keys)."""
    keys = list(metrics) if all_keys or name not in METRIC_KEYS else [k for k in METRIC_KEYS[name] if k in metrics]
    return ", ".join(f"{k}={_format_value(k, metrics[k])}" for k in keys)


def results_table(results: Iterable[NotebookResult]) -> str:
    """One Markdown table (readable as plain text too): notebook, profile, device, wall_s,
    status, key metrics."""
    header = ["notebook", "profile", "device", "wall_s", "status", "key metrics"]
    rows = []
    for r in results:
        wall = f"{r.wall_s:.1f}" if isinstance(r.wall_s, (int, float)) else "-"
        metrics = format_metrics(r.name, r.metrics) if r.metrics else ""
        rows.append([r.name, r.profile, r.device or "-", wall, r.status, metrics or "-"])
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def write_summary(results: list[NotebookResult], build_dir: str | Path) -> tuple[Path, Path]:
    """``results_summary.json`` (every metric) and ``results_summary.md`` (the table)."""
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = build_dir / "results_summary.json", build_dir / "results_summary.md"
    json_path.write_text(json.dumps([r.to_dict() for r in results], indent=2, default=str))
    problems = [f"- **{r.name}** {r.status}: {r.error}" for r in results if not r.ok and r.error]
    md_path.write_text(results_table(results) + "\n" + ("\n" + "\n".join(problems) + "\n" if problems else ""))
    return json_path, md_path


def update_readme(readme: str | Path, table: str, start_marker: str = RESULTS_START,
                  end_marker: str = RESULTS_END) -> str:
    """Return the text of ``readme`` (README.md, or any page) with ``table`` placed between the
    two markers (default ``<!-- results:start -->`` / ``<!-- results:end -->``)."""
    readme = Path(readme)
    if not readme.is_file():
        raise FileNotFoundError(f"{readme} does not exist")
    text = readme.read_text()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(
            f"{readme} has no '{start_marker}' ... '{end_marker}' block; add the two markers "
            "where the table belongs"
        )
    return text[: start + len(start_marker)] + "\n" + table.rstrip() + "\n" + text[end:]
