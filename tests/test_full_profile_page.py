"""book/full_profile.md is generated from full.yaml, paper_settings.yaml, the weights registry and the
dataset catalog; the committed page must match, and the generator refuses inconsistent inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from rslab import notebooks as nbs
from rslab.data.catalog import DATASETS
from rslab.weights import WEIGHTS

ROOT = Path(__file__).resolve().parents[1]


def test_committed_page_is_current():
    page = ROOT / nbs.FULL_PROFILE_PAGE
    assert page.is_file(), "run `rslab notebooks full-profile-page --write`"
    assert page.read_text() == nbs.full_profile_page(ROOT), \
        "book/full_profile.md is stale: run `rslab notebooks full-profile-page --write`"


def test_page_lists_each_notebook_with_its_weights_and_datasets():
    text = nbs.full_profile_page(ROOT)
    full = nbs.load_profile(ROOT, "full")
    for stem in nbs.NOTEBOOK_STEMS:
        assert f"## {stem}" in text
    section = text[text.index("## 01_sar_alignment"):text.index("## 02_qsacl_pretraining")]
    assert f"`{full['01_sar_alignment']['teacher']}`" in section and WEIGHTS["clip-vit-b16-openai"].url in section
    for name in ("sen12ms", "sen1floods11"):
        assert f"`{DATASETS[name].folder}/`" in section
    # every registry or catalog name that full.yaml gives notebooks 00-03 is listed on the page
    for stem in ("00_data_tour", "01_sar_alignment", "02_qsacl_pretraining", "03_vita_sga"):
        sec = text[text.index(f"## {stem}"):]
        sec = sec[:sec.index("\n## ", 4)] if "\n## " in sec[4:] else sec
        for key, value in full[stem].items():
            if isinstance(value, str) and (value in WEIGHTS or value in DATASETS):
                assert f"| `{value}` |" in sec, (stem, key, value)


def _fake_root(tmp_path: Path, edit) -> Path:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    shutil.copytree(ROOT / "notebooks" / "profiles", tmp_path / "notebooks" / "profiles")
    path = tmp_path / nbs.PAPER_SETTINGS
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return tmp_path


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["03_vita_sga"]["settings"][0].update(param="text_weigths"), "does not set \\['text_weigths'\\]"),
    (lambda d: d["02_qsacl_pretraining"]["settings"][0].pop("why"), "say 'same: true' or why"),
    (lambda d: d["01_sar_alignment"].update(weights=["clip-vit-l14"]), "neither a full.yaml key naming a weights"),
    (lambda d: d["01_sar_alignment"]["settings"][1].update(param="teacher"), "exactly one of 'param'"),
])
def test_inconsistent_paper_settings_are_refused(tmp_path, edit, message):
    with pytest.raises(ValueError, match=message):
        nbs.full_profile_page(_fake_root(tmp_path, edit))
