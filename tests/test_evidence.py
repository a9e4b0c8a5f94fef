"""Evidence over seeds (rslab/evidence.py): the verdict rule and the aggregation on synthetic
results.json files (no notebook runs), the claims file, the page writer, and (``-m notebook``) the
seed runner on the ci profile with 2 seeds of one cheap notebook."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from rslab import evidence as ev
from rslab import notebooks as nbs

ROOT = Path(__file__).resolve().parents[1]


def _write_results(base: Path, seed: int, stem: str, metrics: dict, profile: str = "smoke", wall_s: float = 10.0,
                   written_seed: int | None = None) -> None:
    folder = base / f"seed{seed}" / stem
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"notebook": stem, "profile": profile, "metrics": metrics, "wall_s": wall_s, "device": "cpu",
               "seed": seed if written_seed is None else written_seed}
    (folder / "results.json").write_text(json.dumps(payload))


def _claim(a="x", relation=">", b="y", margin=0.0, notebook="09_toy"):
    return ev.Claim(notebook=notebook, a=a, relation=relation, b=b, paper="p", margin=margin)


# --- the verdict rule --------------------------------------------------------------------------

@pytest.mark.parametrize("diffs, expected", [
    ([0.10, 0.12, 0.11], ev.HOLDS),            # mean 0.11, std 0.01: far beyond 2 std
    ([-0.10, -0.12, -0.11], ev.REVERSED),
    ([0.10, -0.05, 0.02], ev.WITHIN_NOISE),    # mean 0.023, std 0.075
    ([0.0, 0.0, 0.0], ev.WITHIN_NOISE),        # identical numbers: no effect, not "holds"
    ([0.05, 0.05, 0.05], ev.HOLDS),            # no spread, positive effect
    ([0.3], ev.TOO_FEW),
    ([], ev.TOO_FEW),
])
def test_verdict_rule(diffs, expected):
    assert ev.verdict(diffs) == expected


def test_verdict_boundary_is_twice_the_std():
    # mean 2, sample std 1 (values 1, 2, 3): exactly 2 std is not beyond it
    assert ev.verdict([1.0, 2.0, 3.0]) == ev.WITHIN_NOISE
    assert ev.verdict([1.1, 2.1, 3.1]) == ev.HOLDS
    assert ev.verdict([1.0, 2.0, 3.0], factor=1.5) == ev.HOLDS


def test_mean_std_is_the_sample_std_and_refuses_nan():
    m, s = ev.mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5) and s == pytest.approx(math.sqrt(5 / 3))
    assert ev.mean_std([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError, match="non-finite"):
        ev.mean_std([1.0, float("nan")])
    with pytest.raises(ValueError, match="at least one"):
        ev.mean_std([])


def test_paired_differences_orientation_margin_and_missing_keys():
    per_seed = {0: {"x": 0.5, "y": 0.3}, 1: {"x": 0.4, "y": 0.35}, 2: {"x": 0.6}, 3: {"x": "n/a", "y": 0.1}}
    diffs, problems = ev.paired_differences(_claim(), per_seed)
    assert diffs == pytest.approx({0: 0.2, 1: 0.05})
    assert len(problems) == 2 and "seed 2" in problems[0] and "y" in problems[0] and "seed 3" in problems[1]
    below, _ = ev.paired_differences(_claim(relation="<"), per_seed)
    assert below == pytest.approx({0: -0.2, 1: -0.05})
    margin, _ = ev.paired_differences(_claim(margin=0.1), per_seed)
    assert margin == pytest.approx({0: 0.1, 1: -0.05})
    constant, _ = ev.paired_differences(_claim(b=0.45), per_seed)
    assert constant == pytest.approx({0: 0.05, 1: -0.05, 2: 0.15})


# --- aggregation on synthetic results ----------------------------------------------------------

def test_aggregate_rows_and_verdicts(tmp_path):
    stem = "09_toy"
    # a: clearly above b; c: clearly below b; d: noise around b
    values = {0: dict(a=0.60, b=0.40, c=0.20, d=0.45), 1: dict(a=0.62, b=0.41, c=0.22, d=0.38),
              2: dict(a=0.58, b=0.39, c=0.21, d=0.41)}
    for seed, m in values.items():
        _write_results(tmp_path, seed, stem, m, wall_s=100.0 + seed)
    _write_results(tmp_path, 3, stem, dict(a=0.0, b=1.0), profile="ci")  # another profile: left out
    _write_results(tmp_path, 4, stem, dict(a=0.0, b=1.0), written_seed=7)  # a copied folder: left out
    claims = [_claim("a", ">", "b", notebook=stem), _claim("c", ">", "b", notebook=stem),
              _claim("d", ">", "b", notebook=stem), _claim("c", "<", "b", notebook=stem),
              _claim("a", ">", "b", margin=0.5, notebook=stem), _claim("a", ">", 0.5, notebook=stem),
              _claim("zz", ">", "b", notebook=stem)]
    s = ev.aggregate(tmp_path, claims, profile="smoke")
    assert s.seeds == [0, 1, 2]
    assert any("seed3" in p and "profile 'ci'" in p for p in s.problems)
    assert any("seed4" in p and "seed 7" in p for p in s.problems)
    assert [c["verdict"] for c in s.claims] == [ev.HOLDS, ev.REVERSED, ev.WITHIN_NOISE, ev.HOLDS, ev.REVERSED,
                                                ev.HOLDS, ev.NOT_MEASURED]
    d = s.to_dict()
    row = d["rows"][stem]["a"]
    assert row["mean"] == pytest.approx(0.60) and row["std"] == pytest.approx(0.02) and row["n"] == 3
    assert d["claims"][0]["mean_diff"] == pytest.approx(0.2) and d["claims"][0]["n"] == 3
    assert d["wall_s_per_seed_total"] == {"0": 100.0, "1": 101.0, "2": 102.0}
    md = ev.render_markdown(s)
    assert "0.600 ± 0.020" in md and "**holds**" in md and "**reversed**" in md and "**within noise**" in md
    assert "holds when m > 2 s" in md  # the rule is stated with the table


def test_aggregate_selected_seeds_and_missing_folder(tmp_path):
    for seed in (0, 1, 2):
        _write_results(tmp_path, seed, "09_toy", dict(a=0.5 + seed, b=0.5))
    s = ev.aggregate(tmp_path, [_claim("a", ">", "b")], seeds=[0, 1])
    assert s.seeds == [0, 1] and s.claims[0]["n"] == 2
    with pytest.raises(FileNotFoundError, match="evidence run"):
        ev.aggregate(tmp_path / "nowhere", [_claim()])


# --- the claims file ---------------------------------------------------------------------------

def test_project_claims_file_names_real_notebooks_and_declared_settings():
    claims, settings = ev.load_claims(ROOT / ev.DEFAULT_CLAIMS)
    stems = {nb.stem: nb for nb in nbs.discover_notebooks(ROOT)}
    assert {c.notebook for c in claims} == {"01_sar_alignment", "02_qsacl_pretraining", "03_vita_sga",
                                            "04_rs2sam2", "05_coninfer_inference"}
    for stem, params in settings.items():
        assert set(params) <= nbs.declared_parameters(stems[stem]), stem
    for stem in {c.notebook for c in claims}:
        assert "seed" in nbs.declared_parameters(stems[stem]), f"{stem} must declare `seed`"
    # DESIGN.md's headline keys are among the claims' metrics
    named = {c.a for c in claims} | {c.b for c in claims if isinstance(c.b, str)}
    for stem in ("02_qsacl_pretraining", "04_rs2sam2", "05_coninfer_inference"):
        assert set(nbs.METRIC_KEYS[stem]) - {"probe_miou_qsacl_sar", "oiou_full", "pr50_full", "pr70_full",
                                             "pr90_full"} <= named


@pytest.mark.parametrize("bad, message", [
    ({"claims": []}, "non-empty list"),
    ({"claims": [{"notebook": "01", "a": "x", "relation": ">=", "b": "y", "paper": "p"}]}, "relation"),
    ({"claims": [{"notebook": "01", "a": "x", "relation": ">", "paper": "p"}]}, "lacks"),
    ({"claims": [{"notebook": "01", "a": "x", "relation": ">", "b": "y", "paper": "p", "typo": 1}]}, "unknown keys"),
    ({"claims": [{"notebook": "01", "a": "x", "relation": ">", "b": True, "paper": "p"}]}, "metric key or a number"),
    ({"claims": [{"notebook": "01", "a": "x", "relation": ">", "b": "y", "paper": "p", "margin": -1}]}, "margin"),
    ({"claims": [{"notebook": "01", "a": "x", "relation": ">", "b": "y", "paper": "p"}], "setting": {}}, "top-level"),
])
def test_bad_claims_files_are_refused(tmp_path, bad, message):
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(ValueError, match=message):
        ev.load_claims(path)
    with pytest.raises(FileNotFoundError):
        ev.load_claims(tmp_path / "absent.yaml")


def test_runner_refuses_bad_seeds_before_running(tmp_path):
    claims = [_claim(notebook="04_rs2sam2")]
    for seeds in ([], [0, 0], [-1], ["1"]):
        with pytest.raises(ValueError, match="seed"):
            ev.run_seeds(seeds, claims=claims, root=ROOT, out_dir=tmp_path)
    with pytest.raises(ValueError, match="do not exist"):
        ev.run_seeds([0], claims=[_claim(notebook="99_nothing")], root=ROOT, out_dir=tmp_path)
    with pytest.raises(ValueError, match="declares no such name"):
        ev.run_seeds([0], claims=claims, settings={"04_rs2sam2": {"no_such_parameter": 1}}, root=ROOT,
                     out_dir=tmp_path)


def test_write_page_keeps_the_prose_around_the_markers(tmp_path):
    for seed in (0, 1):
        _write_results(tmp_path / "runs", seed, "09_toy", dict(a=0.5 + seed, b=0.5))
    s = ev.aggregate(tmp_path / "runs", [_claim("a", ">", "b")])
    (tmp_path / "book").mkdir()
    page = tmp_path / ev.PAGE
    page.write_text(f"# Evidence\n\nintro prose\n\n{ev.TABLE_START}\nold table\n{ev.TABLE_END}\n\nclosing prose\n")
    ev.write_page(s, tmp_path, wall_s=12.5)
    text = page.read_text()
    assert "intro prose" in text and "closing prose" in text and "old table" not in text and "1.000 ± 0.707" in text
    payload = json.loads((tmp_path / ev.PAGE_JSON).read_text())
    assert payload["seeds"] == [0, 1] and payload["runner_wall_s"] == 12.5 and "date" in payload and "commit" in payload
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="markers"):
        ev.write_page(s, tmp_path)


# --- the runner, for real (ci profile, 2 seeds, one cheap notebook) ----------------------------

@pytest.mark.notebook
def test_runner_two_seeds_ci_and_resume(tmp_path):
    claims = [ev.Claim(notebook="04_rs2sam2", a="miou_full", relation=">", b="miou_baseline", paper="p"),
              ev.Claim(notebook="04_rs2sam2", a="miou_tbl", relation=">", b="miou_baseline", paper="p")]
    out = tmp_path / "evidence"
    records = ev.run_seeds([0, 1], claims=claims, profile="ci", root=ROOT, out_dir=out, log=lambda _: None)
    assert [(r["seed"], r["status"], r["skipped"]) for r in records] == [(0, "ok", False), (1, "ok", False)]
    for seed in (0, 1):
        payload = json.loads((out / f"seed{seed}" / "04_rs2sam2" / "results.json").read_text())
        assert payload["seed"] == seed and payload["profile"] == "ci"
        record = json.loads((out / f"seed{seed}" / "04_rs2sam2" / ev.RUN_RECORD).read_text())
        assert record["parameters"]["seed"] == seed and record["parameters"]["num_threads"] == 1
    again = ev.run_seeds([0, 1], claims=claims, profile="ci", root=ROOT, out_dir=out, log=lambda _: None)
    assert all(r["skipped"] for r in again)  # resumable: same code and settings, nothing reruns
    s = ev.aggregate(out, claims, profile="ci")
    assert s.seeds == [0, 1] and s.claims[0]["n"] == 2 and s.claims[0]["verdict"] in ev.VERDICTS
    assert s.claims[1]["verdict"] == ev.NOT_MEASURED  # the ci profile runs only the baseline and full rows


def test_diagnostics_rows_show_numbers_and_text(tmp_path):
    for seed, (ctx, x) in enumerate([("backbone", 0.2), ("vita+backbone", 0.4)]):
        _write_results(tmp_path, seed, "09_toy", dict(a=0.5, b=0.4, context=ctx, x=x))
    s = ev.aggregate(tmp_path, [_claim("a", ">", "b")], diagnostics={"09_toy": ["context", "x", "absent"]})
    d = s.to_dict()["diagnostics"]["09_toy"]
    assert d["context"]["per_seed"] == {"0": "backbone", "1": "vita+backbone"} and "mean" not in d["context"]
    assert d["x"]["mean"] == pytest.approx(0.3) and d["absent"]["per_seed"] == {}
    md = ev.render_markdown(s)
    assert "`vita+backbone`" in md and "0.300 ± 0.141" in md
    claims_file = tmp_path / "claims.yaml"
    claims_file.write_text(yaml.safe_dump({"claims": [{"notebook": "09_toy", "a": "a", "relation": ">", "b": "b",
                                                       "paper": "p"}], "diagnostics": {"09_toy": "x"}}))
    with pytest.raises(ValueError, match="diagnostics"):
        ev.load_diagnostics(claims_file)
    assert (set(ev.load_diagnostics(ROOT / ev.DEFAULT_CLAIMS))
            <= {c.notebook for c in ev.load_claims(ROOT / ev.DEFAULT_CLAIMS)[0]})


def test_notebook_evidence_quotes_the_committed_verdicts(tmp_path, monkeypatch):
    from rslab.evidence import PAGE_JSON, notebook_evidence

    assert "make evidence" in notebook_evidence("01_sar_alignment", root=tmp_path)
    monkeypatch.chdir(tmp_path)  # outside any checkout: a sentence, not an error
    assert "from inside it" in notebook_evidence("01_sar_alignment")
    (tmp_path / PAGE_JSON).parent.mkdir(parents=True)
    (tmp_path / PAGE_JSON).write_text(json.dumps({
        "seeds": [0, 1, 2], "profile": "smoke", "date": "2026-12-07T00:00:00+00:00",
        "runs": [{"notebook": "01_sar_alignment", "commit": "abcdef123456"}],
        "claims": [{"notebook": "01_sar_alignment", "label": "alignment moves SAR", "mean_diff": 0.3,
                    "std_diff": 0.02, "verdict": "holds"},
                   {"notebook": "04_rs2sam2", "label": "full vs baseline", "mean_diff": 0.1, "std_diff": 0.2,
                    "verdict": "within noise"}]}))
    text = notebook_evidence("01_sar_alignment", root=tmp_path)
    assert "| alignment moves SAR | +0.300 ± 0.020 | **holds** |" in text
    assert "abcdef1" in text and "full vs baseline" not in text
    assert "holds no claim" in notebook_evidence("02_qsacl_pretraining", root=tmp_path)
