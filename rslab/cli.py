"""The ``rslab`` command line.

    rslab notebooks run [--profile smoke] [--only 03 ...] [--keep-going] [-p key=value | NN.key=value ...]
    rslab notebooks list [--profile smoke]
    rslab notebooks results
    rslab notebooks full-profile-page [--write | --check]
    rslab notebooks datasets [--data-root /data/rs]
    rslab book build
    rslab book check [--screenshot PNG]
    rslab readme-table [--write]
    rslab evidence run [--seeds 0 1 2] [--profile smoke] [--only 01 ...] [--threads 1]
    rslab evidence table [--write]
    rslab weights list [--path DIR]
    rslab weights find NAME [--kind hf] [--path P] [--allow-download]
    rslab weights check [DIR] [--name NAME ...] [--no-load]

Commands run from anywhere inside the repository (the root is found by walking up to the
directory holding ``notebooks/`` and ``pyproject.toml``). Exit status: 0 success, 1 a notebook
or build failed, 2 bad usage or a missing file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rslab import __version__


def _parse_override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    prefix, dot, name = key.rpartition(".")
    scope_ok = not dot or (prefix and all(c.isalnum() or c == "_" for c in prefix))
    if not sep or not name.isidentifier() or not scope_ok:
        raise argparse.ArgumentTypeError(
            f"expected key=value (every selected notebook) or NN.key=value (notebook NN only), with a Python "
            f"name as key, got {text!r}")
    return key, yaml.safe_load(value) if value.strip() else None


def _cmd_notebooks_run(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    root = nbs.find_root()
    results = nbs.run_notebooks(
        profile=args.profile,
        only=args.only,
        keep_going=args.keep_going,
        root=root,
        build_dir=args.build_dir,
        artifacts_dir=args.artifacts_dir,
        overrides=dict(args.param or []),
        cell_timeout=args.cell_timeout,
    )
    print()
    print(nbs.results_table(results))
    build_dir = Path(args.build_dir).resolve() if args.build_dir else root / "build"
    print(f"\nsummary: {build_dir / 'results_summary.md'} and results_summary.json")
    failed = [r for r in results if r.status in ("failed", "no results")]
    for r in failed:
        where = f" (executed copy: {r.executed})" if r.executed else ""
        print(f"FAILED {r.name}: {r.error}{where}", file=sys.stderr)
    return 1 if failed else 0


def _cmd_notebooks_list(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    root = nbs.find_root()
    sections = nbs.load_profile(root, args.profile)
    found = nbs.discover_notebooks(root)
    for nb in found:
        params = nbs.resolve_parameters(nb, args.profile, sections)
        executed = (root / "build" / "notebooks" / nb.name).is_file()
        results = (root / "artifacts" / nb.stem / "results.json").is_file()
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        print(f"{nb.stem:<24} {args.profile}: {shown}"
              f"{'  [executed]' if executed else ''}{'  [results]' if results else ''}")
    absent = [s for s in nbs.NOTEBOOK_STEMS if s not in {nb.stem for nb in found}]
    for stem in absent:
        print(f"{stem:<24} (notebooks/{stem}.ipynb not written yet)")
    return 0


def _cmd_notebooks_full_profile_page(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    root = nbs.find_root()
    text = nbs.full_profile_page(root)
    page = root / nbs.FULL_PROFILE_PAGE
    if args.write:
        page.write_text(text)
        print(f"wrote {page}")
        return 0
    if args.check:
        if not page.is_file() or page.read_text() != text:
            print(f"{page} is stale: run `rslab notebooks full-profile-page --write`", file=sys.stderr)
            return 1
        print(f"{page} is up to date")
        return 0
    print(text, end="")
    return 0


def _cmd_notebooks_datasets(args: argparse.Namespace) -> int:
    from rslab.data.catalog import DATASETS, find_dataset, resolve_data_root

    root = resolve_data_root(args.data_root)
    missing = 0
    for name, entry in DATASETS.items():
        try:
            folder = find_dataset(name, root)
            print(f"{name:<13} found    {folder}  (used by {', '.join(entry.used_by)})")
        except FileNotFoundError as exc:
            missing += 1
            print(f"{name:<13} MISSING  {str(exc).splitlines()[1].strip()[2:]}\n{'':<22}get it from {entry.url}")
    print(f"\n{len(DATASETS) - missing} of {len(DATASETS)} catalog datasets under {root}")
    return 0


def _cmd_notebooks_results(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    results = nbs.collect_results()
    print(nbs.results_table(results))
    if args.all_metrics:
        for r in results:
            if r.metrics:
                print(f"\n{r.name}: {nbs.format_metrics(r.name, r.metrics, all_keys=True)}")
    return 0


def _cmd_book_build(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    try:
        html = nbs.build_book(build_dir=args.build_dir)
    except RuntimeError as exc:
        print(f"rslab: {exc}", file=sys.stderr)
        return 1
    print(f"book: built {html / 'index.html'}")
    return 0


def _cmd_book_check(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    root = nbs.find_root()
    html = Path(args.build_dir or root / "build") / "book" / "html"
    try:
        problems = nbs.check_book(html)
    except FileNotFoundError as exc:
        print(f"rslab: {exc}", file=sys.stderr)
        return 1
    for p in problems:
        print(f"book: {p}", file=sys.stderr)
    print(f"book: {html}: {len(problems)} offline problem(s)")
    if args.screenshot:
        if nbs.find_chromium() is None:
            print("book: no Chromium found, no screenshot (install chromium or set $CHROMIUM)")
        else:
            try:
                png = nbs.screenshot_page(html / args.page, args.screenshot)
            except (FileNotFoundError, RuntimeError) as exc:
                print(f"rslab: {exc}", file=sys.stderr)
                return 1
            print(f"book: screenshot of {args.page} (network off) in {png}")
    return 1 if problems else 0


def _cmd_readme_table(args: argparse.Namespace) -> int:
    from rslab import notebooks as nbs

    root = nbs.find_root()
    if args.artifacts is not None and not Path(args.artifacts).is_dir():
        raise FileNotFoundError(f"artifacts folder not found: {args.artifacts}")
    table = nbs.results_table(nbs.collect_results(root, args.artifacts))
    if not args.write:
        print(table)
        return 0
    readme = Path(args.readme) if args.readme else root / "README.md"
    readme.write_text(nbs.update_readme(readme, table))
    print(f"wrote the results table into {readme}")
    return 0


def _cmd_weights_find(args: argparse.Namespace) -> int:
    from rslab import weights as W

    if args.kind is None and args.name in W.WEIGHTS:  # a registry name
        print(W.find(args.name, path=args.path, allow_download=args.allow_download))
    else:
        print(W.find_weights(args.name, path=args.path, allow_download=args.allow_download, kind=args.kind or "file"))
    return 0



def _cmd_evidence_run(args: argparse.Namespace) -> int:
    from rslab import evidence as ev
    from rslab import notebooks as nbs

    root = nbs.find_root()
    summary = ev.run_and_write(args.seeds, claims_path=args.claims, profile=args.profile, only=args.only,
                               root=root, out_dir=args.out, threads=args.threads, write=not args.no_write)
    print()
    print(ev.render_markdown(summary))
    if not args.no_write:
        print(f"wrote {root / ev.PAGE} and {root / ev.PAGE_JSON}")
    for r in summary.failed_runs:
        print(f"FAILED seed {r['seed']} {r['notebook']}: {r['error']}", file=sys.stderr)
    return 1 if summary.failed_runs else 0


def _cmd_evidence_table(args: argparse.Namespace) -> int:
    from rslab import evidence as ev
    from rslab import notebooks as nbs

    root = nbs.find_root()
    claims_file = args.claims or root / ev.DEFAULT_CLAIMS
    claims, settings = ev.load_claims(claims_file)
    summary = ev.aggregate(args.out or root / ev.DEFAULT_OUT, claims, profile=args.profile, seeds=args.seeds,
                           diagnostics=ev.load_diagnostics(claims_file))
    print(ev.render_markdown(summary))
    if args.write:
        page, page_json = ev.write_page(summary, root, extra={"settings": settings})
        print(f"wrote {page} and {page_json}")
    return 0


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _cmd_weights_list(args: argparse.Namespace) -> int:
    from rslab import weights as W

    if args.path is not None and not Path(args.path).exists():
        raise FileNotFoundError(f"weights folder not found: {args.path}")
    rows = [[r["name"], r["family"], ", ".join(r["files"]), r["paper_model"].split(":")[0],
             ", ".join(u.split("_")[0] for u in r["used_by"]) or "-",
             f"found {r['found']}" if r["found"] else "missing"] for r in W.status(args.path)]
    print(_table(["name", "family", "files", "paper model", "used by", "state"], rows))
    return 0


def _cmd_weights_check(args: argparse.Namespace) -> int:
    from rslab import weights as W

    if args.dir is not None and not Path(args.dir).is_dir():
        raise FileNotFoundError(f"weights folder not found: {args.dir}")
    rows = W.check(args.dir, names=args.name, load_models=not args.no_load)
    print(_table(["name", "state", "file", "detail"],
                 [[r["name"], r["state"], r["found"] or "-", r["detail"]] for r in rows]))
    found = [r for r in rows if r["state"] != "missing"]
    failed = [r for r in rows if r["state"] == "failed"]
    print(f"{len(found)} of {len(rows)} found, {len(found) - len(failed)} verified, {len(failed)} failed")
    return 1 if failed else 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    import json

    from rslab.recipes import standins as S

    if args.readme:
        from rslab.notebooks import find_root, update_readme

        readme = find_root() / "README.md"
        readme.write_text(update_readme(readme, S.standins_table(), S.README_START, S.README_END))
        print(f"updated the stand-in table in {readme}")
        return 0
    if args.list or not args.name:
        rows = [[s.name, s.stands_in_for.split(":")[0][:70], ", ".join(u.split("_")[0] for u in s.used_by),
                 f"{s.sizes['shipped'].get('max_steps')} steps"] for s in S.STANDINS.values()]
        print(_table(["name", "stands in for", "used by", "shipped run"], rows))
        return 0
    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE (JSON value), got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    path = S.pretrain(args.name, size=args.size, out_dir=args.out, work_dir=args.work, progress=not args.quiet,
                      **overrides)
    card = json.loads(path.with_suffix(".json").read_text())
    print(f"{path} ({card['bytes']:,} bytes, sha256 {card['sha256']}), card {path.with_suffix('.md')}")
    print("metrics:", {k: round(v, 4) if isinstance(v, float) else v for k, v in card["metrics"].items()})
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rslab",
        description="rslab: notebook-first multi-modal (optical + SAR) remote-sensing segmentation lab.",
    )
    parser.add_argument("--version", action="version", version=f"rslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    nb = sub.add_parser("notebooks", help="run, list and summarise the tutorial notebooks")
    nb_sub = nb.add_subparsers(dest="action", metavar="ACTION")
    nb_sub.required = True
    run = nb_sub.add_parser("run", help="execute notebooks with papermill and print the results table")
    run.add_argument("--profile", default="smoke", choices=("ci", "smoke", "full"),
                     help="ci = seconds, smoke = CPU minutes (default), full = GPU + real data")
    run.add_argument("--only", nargs="+", metavar="NN", help="notebook prefixes or stems, e.g. --only 01 03")
    run.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    run.add_argument("-p", "--param", action="append", type=_parse_override, metavar="KEY=VALUE",
                     help="override a parameter (YAML value): KEY in every selected notebook (each must "
                          "declare it, except the shared device/data_root/weights_dir/allow_download), "
                          "NN.KEY in notebook NN only, e.g. -p data_root=/data/rs -p 03.steps=100")
    run.add_argument("--cell-timeout", type=float, default=None, metavar="S",
                     help="fail a cell that runs longer than S seconds, then run that notebook once more "
                          "(default: 600 for ci, 900 for smoke, none for full; 0 for no limit)")
    run.add_argument("--build-dir", default=None, help="where executed notebooks and the summary go (default build/)")
    run.add_argument("--artifacts-dir", default=None, help="where notebooks write results (default artifacts/)")
    run.set_defaults(func=_cmd_notebooks_run)
    ls = nb_sub.add_parser("list", help="list notebooks and the parameters a profile gives them")
    ls.add_argument("--profile", default="smoke", choices=("ci", "smoke", "full"))
    ls.set_defaults(func=_cmd_notebooks_list)
    fp = nb_sub.add_parser("full-profile-page", help="render book/full_profile.md (paper vs full profile settings, "
                           "weights and datasets per notebook) from the profiles, the registry and the catalog")
    fp.add_argument("--write", action="store_true", help="write book/full_profile.md")
    fp.add_argument("--check", action="store_true", help="exit 1 when the committed page is stale")
    fp.set_defaults(func=_cmd_notebooks_full_profile_page)
    ds = nb_sub.add_parser("datasets", help="which catalog datasets a data_root holds (official folder names)")
    ds.add_argument("--data-root", default=None, help="the folder holding the datasets (default: $RSLAB_DATA_ROOT)")
    ds.set_defaults(func=_cmd_notebooks_datasets)
    res = nb_sub.add_parser("results", help="print the results table from artifacts/ (no execution)")
    res.add_argument("--all-metrics", action="store_true", help="also print every metric of each notebook")
    res.set_defaults(func=_cmd_notebooks_results)

    book = sub.add_parser("book", help="build the Jupyter Book from the executed notebooks")
    book_sub = book.add_subparsers(dest="action", metavar="ACTION")
    book_sub.required = True
    bb = book_sub.add_parser("build", help="stage build/notebooks + book/ and build build/book/html (offline)")
    bb.add_argument("--build-dir", default=None, help="default build/")
    bb.set_defaults(func=_cmd_book_build)
    bc = book_sub.add_parser("check", help="fail on remote scripts/stylesheets and missing images in the built book")
    bc.add_argument("--build-dir", default=None, help="default build/")
    bc.add_argument("--screenshot", default=None, metavar="PNG",
                    help="also render --page in headless Chromium (network off) into PNG, when Chromium is installed")
    bc.add_argument("--page", default="notebooks/01_sar_alignment.html",
                    help="page for --screenshot (a page with math)")
    bc.set_defaults(func=_cmd_book_check)

    rt = sub.add_parser("readme-table", help="render the results table (Markdown) from artifacts/")
    rt.add_argument("--write", action="store_true",
                    help="replace the block between <!-- results:start --> and <!-- results:end --> in README.md")
    rt.add_argument("--readme", default=None, help="default: README.md at the repository root")
    rt.add_argument("--artifacts", default=None,
                    help="the artifacts folder to read (default artifacts/), e.g. artifacts/evidence/seed0")
    rt.set_defaults(func=_cmd_readme_table)

    evd = sub.add_parser("evidence",
                         help="each notebook's key comparisons over several seeds, with a verdict per claim")
    evd_sub = evd.add_subparsers(dest="action", metavar="ACTION")
    evd_sub.required = True
    er = evd_sub.add_parser("run", help="run the notebooks of notebooks/profiles/claims.yaml once per seed "
                            "(resumable), then write book/evidence.md and book/evidence.json")
    er.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="N", help="default: 0 1 2")
    er.add_argument("--profile", default="smoke", choices=("ci", "smoke", "full"))
    er.add_argument("--only", nargs="+", metavar="NN", help="only these notebooks (prefixes or stems)")
    er.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS and the notebooks' thread parameter (default 1)")
    er.add_argument("--claims", default=None, help="default: notebooks/profiles/claims.yaml")
    er.add_argument("--out", default=None, help="where the runs go (default artifacts/evidence)")
    er.add_argument("--no-write", action="store_true", help="print the tables, do not write book/evidence.*")
    er.set_defaults(func=_cmd_evidence_run)
    et = evd_sub.add_parser("table", help="aggregate the runs under artifacts/evidence (no execution)")
    et.add_argument("--seeds", nargs="+", type=int, default=None, metavar="N", help="default: every seed found")
    et.add_argument("--profile", default="smoke", choices=("ci", "smoke", "full"))
    et.add_argument("--claims", default=None, help="default: notebooks/profiles/claims.yaml")
    et.add_argument("--out", default=None, help="where the runs are (default artifacts/evidence)")
    et.add_argument("--write", action="store_true",
                    help="write book/evidence.md (between its markers) and book/evidence.json")
    et.set_defaults(func=_cmd_evidence_table)

    w = sub.add_parser("weights", help="the foundation-weights registry: list, find and check weights on disk")
    w_sub = w.add_subparsers(dest="action", metavar="ACTION")
    w_sub.required = True
    wl = w_sub.add_parser("list", help="table of registry entries and whether each is found")
    wl.add_argument("--path", default=None, help="a weights folder to search first (then $RSLAB_WEIGHTS_DIR, caches)")
    wl.set_defaults(func=_cmd_weights_list)
    wc = w_sub.add_parser("check", help="verify every entry found (sha256 where published, strict load)")
    wc.add_argument("dir", nargs="?", default=None, help="weights folder (default: $RSLAB_WEIGHTS_DIR and caches)")
    wc.add_argument("--name", nargs="+", default=None, help="only these registry names")
    wc.add_argument("--no-load", action="store_true", help="only hash, do not build and load the models")
    wc.set_defaults(func=_cmd_weights_check)
    wf = w_sub.add_parser("find", help="print the path of NAME's weights, or where it looked")
    wf.add_argument("name", help="a registry name (rslab weights list), or with --kind: a file name, "
                                 "Hugging Face repo id, timm model or open_clip 'model/tag'")
    wf.add_argument("--kind", default=None, choices=("file", "hf", "timm", "open_clip"),
                    help="search a raw name of this kind instead of a registry entry (default: file)")
    wf.add_argument("--path", default=None, help="an explicit file or folder to try first")
    wf.add_argument("--allow-download", action="store_true", help="download when absent (needs internet)")
    wf.set_defaults(func=_cmd_weights_find)

    pt = sub.add_parser("pretrain", help="pretrain a stand-in foundation on the synthetic world (resumable)")
    pt.add_argument("name", nargs="?", help="the stand-in (see --list)")
    pt.add_argument("--list", action="store_true", help="list the stand-ins and what each stands in for")
    pt.add_argument("--readme", action="store_true", help="rewrite README.md's stand-in table from the model cards")
    pt.add_argument("--size", default="shipped", choices=("shipped", "ci"),
                    help="shipped: the settings of the files in rslab/standins/; ci: a toy run in seconds")
    pt.add_argument("--out", default=None, help="folder for <name>.safetensors/.json/.md (default: rslab/standins/)")
    pt.add_argument("--work", default=None, help="checkpoint folder; a stopped run resumes from it "
                                                 "(default: <out>/.work/<name>-<size>)")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE", help="change one setting (JSON value), repeatable")
    pt.add_argument("--quiet", action="store_true", help="no progress bar")
    pt.set_defaults(func=_cmd_pretrain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"rslab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rslab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
