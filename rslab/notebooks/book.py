"""The book: stage the executed notebooks and pages, build with Jupyter Book, check the HTML, and
write the generated pages (results table, the full profile's page).

nbformat, yaml, jupyter_server_mathjax and ``rslab.data.catalog`` (whose package loads torch) are
imported inside the functions that use them: ``import rslab.cli`` must stay light
(``tests/test_packaging.py``), and the book's tools are optional at run time. ``rslab.weights`` is
light and imported at the top.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from rslab.notebooks.runner import (
    DEFAULTS_KEY,
    METRIC_KEYS,
    RESULTS_START,
    NotebookResult,
    _format_value,
    collect_results,
    find_root,
    load_profile,
    update_readme,
)
from rslab.weights import WEIGHTS


def _toc_files(toc: Any) -> Iterator[dict]:
    """Every entry holding a ``file`` key in a jb-book TOC (any depth)."""
    if isinstance(toc, dict):
        if "file" in toc:
            yield toc
        for value in toc.values():
            yield from _toc_files(value)
    elif isinstance(toc, list):
        for item in toc:
            yield from _toc_files(item)


def _drop_toc_entries(node: Any, drop: set[str]) -> Any:
    """Copy of the TOC without the entries whose ``file`` is in ``drop`` (and empty parts)."""
    if isinstance(node, list):
        kept = [_drop_toc_entries(x, drop) for x in node if not (isinstance(x, dict) and x.get("file") in drop)]
        return [x for x in kept if not (isinstance(x, dict) and "caption" in x and not x.get("chapters"))]
    if isinstance(node, dict):
        return {k: _drop_toc_entries(v, drop) for k, v in node.items()}
    return node


def stage_book(
    root: str | Path | None = None,
    build_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    artifacts_dir: str | Path | None = None,
) -> Path:
    """Assemble ``<build_dir>/book_src/``: ``book/*`` plus, for each ``notebooks/<stem>`` entry
    of ``book/_toc.yml``, the executed copy from ``<build_dir>/notebooks/`` (or the stripped
    source notebook with a note when it was not executed; the entry is dropped with a warning
    when the notebook does not exist at all). ``results.md`` gets the current results table."""
    import nbformat
    import yaml

    root = Path(root).resolve() if root else find_root()
    build_dir = Path(build_dir).resolve() if build_dir else root / "build"
    book = root / "book"
    if not (book / "_toc.yml").is_file() or not (book / "_config.yml").is_file():
        raise FileNotFoundError(f"{book} needs _toc.yml and _config.yml (Jupyter Book 1 sources)")
    staging = build_dir / "book_src"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(book, staging, ignore=shutil.ignore_patterns("_build", ".ipynb_checkpoints"))
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    missing: set[str] = set()
    for entry in _toc_files(toc):
        file = str(entry["file"])
        if not file.startswith("notebooks/"):
            continue
        stem = Path(file).name.removesuffix(".ipynb")
        executed = build_dir / "notebooks" / f"{stem}.ipynb"
        source = root / "notebooks" / f"{stem}.ipynb"
        target = staging / "notebooks" / f"{stem}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        if executed.is_file():
            nb = nbformat.read(str(executed), as_version=4)
            dropped = _drop_widget_state(nb)
            nbformat.write(nb, str(target))
            if dropped:
                log(f"book: {stem}: {dropped} widget view(s) shown by their text form (widgets need a live kernel)")
            failed = nb.metadata.get("papermill", {}).get("exception")
            log(f"book: {stem}: executed notebook {executed}"
                + (" (WARNING: its last run FAILED; the page shows the error)" if failed else ""))
        elif source.is_file():
            nb = nbformat.read(str(source), as_version=4)
            for cell in nb.cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
            note = nbformat.v4.new_markdown_cell(
                "```{note}\nThis page shows the notebook **without outputs**: it has not been executed "
                f"yet. Run `rslab notebooks run --only {stem[:2]}` and rebuild the book to see its results.\n```"
            )
            nb.cells.insert(0, note)
            nbformat.write(nb, str(target))
            log(f"book: {stem}: NOT executed yet, including the source notebook without outputs")
        else:
            missing.add(file)
            log(f"book: warning: {source} does not exist; leaving {stem} out of the book")
    if missing:
        toc = _drop_toc_entries(toc, missing)
        (staging / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
        # links to the missing chapters become plain text rather than broken references
        stems = "|".join(re.escape(Path(f).name) for f in missing)
        link = re.compile(rf"\[([^\]]+)\]\(notebooks/(?:{stems})(?:\.ipynb)?\)")
        for page in staging.glob("*.md"):
            text = page.read_text()
            if link.search(text):
                page.write_text(link.sub(r"\1 (not written yet)", text))
    results_page = staging / "results.md"
    if results_page.is_file() and RESULTS_START in results_page.read_text():
        table = results_page_table(collect_results(root, artifacts_dir))
        results_page.write_text(update_readme(results_page, table))
    for nb_path in sorted((staging / "notebooks").glob("*.ipynb")):
        for problem in tagged_cells_without_output(nb_path):
            log(f"book: warning: {nb_path.stem}: {problem}")
    _stage_mathjax(staging)
    return staging


_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _drop_widget_state(nb) -> int:
    """Remove ipywidgets views (e.g. progress bars) and the saved widget state from an executed
    notebook, in place; each output keeps its other forms (text). Jupyter Book would otherwise load
    require.js and the widget manager from CDNs for widgets nobody can move in a static page.
    Returns the number of views removed."""
    dropped = 0
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data")
            if data and _WIDGET_MIME in data:
                data.pop(_WIDGET_MIME)
                dropped += 1
                if not data:
                    continue
            kept.append(out)
        if cell.cell_type == "code":
            cell.outputs = kept
    return dropped


def mathjax_dir() -> Path:
    """The MathJax 2.7 static files shipped by the ``jupyter-server-mathjax`` wheel (a dependency)."""
    try:
        import jupyter_server_mathjax
    except ImportError as exc:
        raise RuntimeError(
            "the book serves MathJax from its own files and needs the jupyter-server-mathjax package: "
            "`pip install jupyter-server-mathjax==0.2.6` (pyproject.toml lists it)") from exc
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").is_file():
        raise RuntimeError(f"{static} has no MathJax.js; reinstall jupyter-server-mathjax")
    return static


def _stage_mathjax(staging: Path) -> None:
    """Copy MathJax into ``<staging>/_mathjax/mathjax`` (served as ``_static/mathjax``,
    where ``mathjax_path`` points)."""
    target = staging / "_mathjax" / "mathjax"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(mathjax_dir(), target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))


#: Cell tags the notebook generators set: a ``figure`` cell must leave an image, a ``report`` cell
#: Markdown (written by ``rslab.viz.report``) in the executed notebook.
OUTPUT_TAGS = {"figure": ("image/png", "image/svg+xml", "image/jpeg"), "report": ("text/markdown",)}


def tagged_cells_without_output(notebook: str | Path) -> list[str]:
    """Problems of an executed notebook: each cell tagged ``figure`` that produced no image and
    each cell tagged ``report`` that produced no Markdown, as ``cell[i] `first line`: ...``."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for tag in cell.get("metadata", {}).get("tags", []):
            if tag not in OUTPUT_TAGS:
                continue
            mimes = {m for out in cell.get("outputs", []) for m in out.get("data", {})}
            if not mimes & set(OUTPUT_TAGS[tag]):
                first = next((ln for ln in cell.source.splitlines() if ln.strip() and not ln.startswith("#")), "")
                problems.append(f"cell[{i}] `{first.strip()}` is tagged '{tag}' but produced no "
                                f"{' / '.join(OUTPUT_TAGS[tag])} output")
    return problems


#: What each metric is measured against on the results page: the project's acceptance target for
#: the smoke profile on a CPU (README, "Results"), and the paper's own number where its paper
#: reports a comparable one (``../shared/seeds``; different data and model size: a scale, not a goal).
METRIC_TARGETS: dict[str, dict[str, str]] = {
    "scenes_per_s": {"target": "> 0"},
    "sar2opt_r1_before": {"target": "chance level"},
    "sar2opt_r1_after": {"target": ">= 0.8"},
    "sar_zeroshot_acc_after": {"target": "above before"},
    "probe_miou_qsacl": {"target": ">= random + 0.15, > image-level"},
    "probe_miou_qsacl_sar": {"target": "above random"},
    "miou_visual": {"target": ">= 0.5", "paper": "0.561 (LoveDA, 1-shot)"},
    "miou_text": {"target": ">= 0.5", "paper": "0.605 (LoveDA)"},
    "miou_fused": {"target": "best of V/T - 0.02", "paper": "0.621 (LoveDA)"},
    "miou_text_unseen_synonyms": {"target": ">= 0.8 x text"},
    "miou_sar_fused": {"target": "-", "paper": "0.296 (ETCI-Flood)"},
    "miou_baseline": {"target": "below full"},
    "miou_full": {"target": ">= 0.5", "paper": "0.667 (RRSIS-D)"},
    "oiou_full": {"target": "-", "paper": "0.790 (RRSIS-D)"},
    "pr50_full": {"target": "-", "paper": "0.776 (RRSIS-D)"},
    "pr70_full": {"target": "-", "paper": "0.618 (RRSIS-D)"},
    "pr90_full": {"target": "-", "paper": "0.297 (RRSIS-D)"},
    "miou_joint": {"target": ">= prior + 0.05", "paper": "0.408 (8-dataset mean)"},
}


def results_page_table(results: Iterable[NotebookResult]) -> str:
    """The book's results page: per notebook, a line with its profile, device, time and status,
    then a table of its key metrics (metric, this run, target, paper), narrow enough to read
    without scrolling."""
    blocks = []
    for r in results:
        wall = f"{r.wall_s:.1f} s" if isinstance(r.wall_s, (int, float)) else "-"
        head = f"**{r.name}**: {r.status}"
        if r.status != "not run":
            head += f", profile `{r.profile}`, {r.device or 'device unknown'}, {wall}"
        keys = [k for k in METRIC_KEYS.get(r.name, tuple(r.metrics)) if k in r.metrics] if r.metrics else []
        if not keys:
            blocks.append(head + (f" ({r.error})" if r.error else ""))
            continue
        lines = [head, "", "| metric | this run | target | paper |", "|---|---|---|---|"]
        for key in keys:
            info = METRIC_TARGETS.get(key, {})
            lines.append(f"| `{key}` | {_format_value(key, r.metrics[key])} | {info.get('target', '-')} "
                         f"| {info.get('paper', '-')} |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def build_book(
    root: str | Path | None = None,
    build_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    artifacts_dir: str | Path | None = None,
) -> Path:
    """Stage the book (`stage_book`) and build it with Jupyter Book 1 (execution off, offline)
    into ``<build_dir>/book/html/``; returns that folder. Raises RuntimeError when the build fails."""
    root = Path(root).resolve() if root else find_root()
    build_dir = Path(build_dir).resolve() if build_dir else root / "build"
    staging = stage_book(root, build_dir, log, artifacts_dir)
    out = build_dir / "book"
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()",
           "build", str(staging), "--path-output", str(out), "--builder", "html"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
    proc = subprocess.run(cmd, cwd=str(root), env=env, capture_output=True, text=True)
    built = out / "_build" / "html"
    output = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # drop terminal colours
    if proc.returncode != 0 or not (built / "index.html").is_file():
        tail = "\n".join(output.strip().splitlines()[-30:])
        raise RuntimeError(f"jupyter-book build failed (exit {proc.returncode}):\n{tail}")
    warnings = [ln for ln in output.splitlines() if "WARNING" in ln]
    for ln in warnings[:20]:
        log(f"book: {ln.strip()}")
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)
    shutil.copytree(built, html)
    return html


_REMOTE = re.compile(r"^\s*(?:https?:)?//", re.I)


def _html_problems(text: str, page: Path, html_root: Path, where: str) -> list[str]:
    """Remote scripts/stylesheets/frames and missing or remote images in one HTML document
    (iframes' ``srcdoc`` documents are checked too)."""
    problems: list[str] = []

    class Scan(HTMLParser):
        def handle_starttag(self, tag, attrs):
            a = {k: (v or "") for k, v in attrs}
            if tag == "script" and _REMOTE.match(a.get("src", "")):
                problems.append(f"{where}: remote script {a['src']}")
            elif tag == "link" and _REMOTE.match(a.get("href", "")) and \
                    set(a.get("rel", "").lower().split()) & {"stylesheet", "preload", "modulepreload", "icon"}:
                problems.append(f"{where}: remote {a.get('rel')} {a['href']}")
            elif tag == "iframe":
                if _REMOTE.match(a.get("src", "")):
                    problems.append(f"{where}: remote iframe {a['src']}")
                if a.get("srcdoc"):
                    problems.extend(_html_problems(unescape(a["srcdoc"]), page, html_root, f"{where} (iframe)"))
            elif tag == "img":
                src = a.get("src", "")
                if not src or src.startswith("data:"):
                    return
                if _REMOTE.match(src):
                    problems.append(f"{where}: remote image {src}")
                    return
                target = (page.parent / src.split("#")[0].split("?")[0]).resolve()
                if not target.is_file():
                    problems.append(f"{where}: image {src} is missing")

        def handle_data(self, data):
            if re.search(r"@import\s+(?:url\()?\s*['\"]?(?:https?:)?//", data):
                problems.append(f"{where}: remote @import in a style")

    Scan(convert_charrefs=True).feed(text)
    return problems


def check_book(html_dir: str | Path) -> list[str]:
    """Offline problems of a built book: every remote ``<script>``/stylesheet/``<iframe>`` (also
    inside notebook outputs' iframes), every ``<img>`` whose file is missing or remote, and a
    MathJax script that is remote or absent on a page with math. An empty list means the site
    works from disk with no network."""
    html_dir = Path(html_dir)
    pages = sorted(html_dir.rglob("*.html"))
    if not pages:
        raise FileNotFoundError(f"no HTML pages under {html_dir}; build the book first (`rslab book build`)")
    problems: list[str] = []
    for page in pages:
        if "_static" in page.relative_to(html_dir).parts:
            continue
        text = page.read_text(errors="replace")
        where = str(page.relative_to(html_dir))
        problems += _html_problems(text, page, html_dir, where)
        if 'class="math' in text:
            local = re.search(r'<script[^>]+src="([^"]*MathJax\.js)[^"]*"', text)
            if not local:
                problems.append(f"{where}: has math but loads no MathJax")
            elif not (page.parent / local.group(1)).resolve().is_file():
                problems.append(f"{where}: MathJax script {local.group(1)} is missing")
    return problems


def find_chromium() -> str | None:
    """A headless-capable Chromium/Chrome on PATH (``$CHROMIUM`` first), or None."""
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome", "chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def screenshot_page(page: str | Path, png: str | Path, width: int = 1280, height: int = 1600,
                    chromium: str | None = None, wait_ms: int = 8000) -> Path:
    """Render ``page`` (a built HTML file) in headless Chromium, with the network unreachable,
    into ``png``; ``wait_ms`` lets MathJax typeset first. Raises RuntimeError without Chromium."""
    page, png = Path(page).resolve(), Path(png).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"{page} does not exist; build the book first (`rslab book build`)")
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("no Chromium found (install it, e.g. `apt-get install chromium`, or set $CHROMIUM)")
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)  # a screenshot from an earlier call must not pass for this one
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--allow-file-access-from-files", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           f"--virtual-time-budget={wait_ms}", f"--window-size={width},{height}",
           f"--screenshot={png}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not png.is_file():
        raise RuntimeError(f"chromium failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
    return png
# --- the full profile's book page ---------------------------------------------------------------

FULL_PROFILE_PAGE = "book/full_profile.md"
PAPER_SETTINGS = "notebooks/profiles/paper_settings.yaml"


def _md_cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _named(keys: Any, section: dict[str, Any], known: dict, what: str, stem: str) -> list[str]:
    """Registry/catalog names of a paper_settings ``weights``/``datasets`` list: a full.yaml key of
    ``section`` (its value is the name) or a name itself; anything else is a ValueError."""
    names = []
    for key in keys or []:
        name = section.get(key, key)
        if name is None or name == "synthetic":
            raise ValueError(f"{PAPER_SETTINGS}: {stem}: full.yaml sets {key!r} to {name!r}, not a {what} name")
        if name not in known:
            raise ValueError(f"{PAPER_SETTINGS}: {stem}: {key!r} is neither a full.yaml key naming a {what} nor a "
                             f"known {what} ({', '.join(known)})")
        names.append(str(name))
    return list(dict.fromkeys(names))


def full_profile_page(root: str | Path | None = None) -> str:
    """The text of ``book/full_profile.md``: per notebook, the table paper setting / full profile
    value / why different (from ``notebooks/profiles/paper_settings.yaml`` and ``full.yaml``), then
    the weights (from :mod:`rslab.weights`) and datasets (from :mod:`rslab.data.catalog`) it needs.
    Raises ValueError when paper_settings.yaml names a parameter that full.yaml does not set, a row
    has neither ``same: true`` nor ``why``, or a weights/dataset name is unknown."""
    import yaml

    from rslab.data.catalog import DATASETS

    root = Path(root).resolve() if root else find_root()
    full = load_profile(root, "full")
    paper = yaml.safe_load((root / PAPER_SETTINGS).read_text()) or {}
    if not isinstance(paper, dict):
        raise ValueError(f"{PAPER_SETTINGS} must map notebook stems to sections")
    lines = [
        "# The full profile: the papers' settings",
        "",
        "<!-- generated by `rslab notebooks full-profile-page --write` from notebooks/profiles/full.yaml,",
        "notebooks/profiles/paper_settings.yaml, the weights registry and the dataset catalog: do not edit -->",
        "",
        "The `full` profile runs each paper's setup as far as public material allows. It reads the official",
        "weights by registry name from `$RSLAB_WEIGHTS_DIR` and the datasets by catalog name from one",
        "`data_root` folder holding them under their official folder names:",
        "",
        "```bash",
        "RSLAB_WEIGHTS_DIR=/data/weights rslab notebooks run --profile full -p data_root=/data/rs",
        "```",
        "",
        "Without a GPU the run stops unless `-p device=cpu` is given; a missing weights file or dataset",
        "stops a notebook within seconds with one message listing all that is missing.",
        "`rslab weights check` shows the state of a weights folder.",
        "",
    ]
    defaults = full.get(DEFAULTS_KEY, {})
    for stem, spec in paper.items():
        if stem not in full:
            raise ValueError(f"{PAPER_SETTINGS}: {stem} has no section in full.yaml")
        section = {**defaults, **full[stem]}
        lines += [f"## {stem}", "", _md_cell(spec.get("paper", "")), ""]
        if spec.get("settings"):
            lines += ["| setting | paper | full profile | why different |", "|---|---|---|---|"]
        for i, row in enumerate(spec.get("settings") or []):
            where = f"{PAPER_SETTINGS}: {stem} settings[{i}]"
            if not isinstance(row, dict) or "setting" not in row or "paper" not in row:
                raise ValueError(f"{where}: each row needs 'setting' and 'paper'")
            if ("param" in row) == ("full" in row):
                raise ValueError(f"{where} ({row['setting']}): give exactly one of 'param' (full.yaml keys) or 'full'")
            if not row.get("same") and not row.get("why"):
                raise ValueError(f"{where} ({row['setting']}): say 'same: true' or why the full profile differs")
            if "param" in row:
                keys = row["param"] if isinstance(row["param"], list) else [row["param"]]
                absent = [k for k in keys if k not in section]
                if absent:
                    raise ValueError(f"{where} ({row['setting']}): full.yaml's {stem} section does not set {absent}")
                value = ", ".join(f"`{k}: {json.dumps(section[k])}`" for k in keys)
            else:
                value = _md_cell(row["full"])
            why = "same as the paper" if row.get("same") else _md_cell(row["why"])
            lines.append(f"| {_md_cell(row['setting'])} | {_md_cell(row['paper'])} | {value} | {why} |")
        weights = _named(spec.get("weights"), section, WEIGHTS, "weights", stem)
        datasets = _named(spec.get("datasets"), section, DATASETS, "dataset", stem)
        lines.append("")
        if weights:
            lines += ["Weights (`$RSLAB_WEIGHTS_DIR`, `rslab.weights`):", "",
                      "| name | paper component | accepted files | get it from |", "|---|---|---|---|"]
            for name in weights:
                e = WEIGHTS[name]
                files = ", ".join(f"`{f}`" for f in e.files)
                lines.append(f"| `{name}` | {_md_cell(e.paper_model)} | {files} | {e.url} |")
            lines.append("")
        else:
            lines += ["Weights: none (everything is trained in the notebook).", ""]
        if datasets:
            lines += ["Datasets (under `data_root`, `rslab.data.catalog`):", "",
                      "| name | folder | layout | get it from |", "|---|---|---|---|"]
            for name in datasets:
                e = DATASETS[name]
                layout = "<br>".join(f"`{ln.strip()}`" if "/" in ln and not ln.strip().startswith("(") else
                                     _md_cell(ln) for ln in e.layout.splitlines())
                lines.append(f"| `{name}` | `{e.folder}/` | {layout} | {_md_cell(e.url)} |")
            lines.append("")
    from rslab.data.catalog import datasets_table

    lines += ["## The dataset catalog", "",
              "Every dataset the notebooks read, under its official folder name in `data_root`",
              "(`rslab notebooks datasets --data-root /data/rs` shows which are there):", "",
              datasets_table(), ""]
    return "\n".join(lines).rstrip() + "\n"
