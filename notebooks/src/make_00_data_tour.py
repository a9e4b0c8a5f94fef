"""Write notebooks/00_data_tour.ipynb (outputs empty). Run from the repo root:

    .venv/bin/python notebooks/src/make_00_data_tour.py

Edit this file, not the notebook: the notebook is generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbgen import Notebook  # noqa: E402

nb = Notebook("00_data_tour")
md, code = nb.md, nb.code


md(r"""
# 00 · A tour of the data

Every later notebook trains on the same kind of data: **co-registered optical and SAR images with
labels from a semantic tree, captions and referring expressions**. Before any model, this notebook
looks at that data closely, because most surprises in multi-modal remote sensing come from the
data, not the network.

You will see:

1. the **semantic tree**: classes at three levels of granularity, with synonyms (some held out);
2. one scene as **optical vs SAR**, and why SAR looks the way it does: speckle, the dB scale, dark
   water, bright double bounce at buildings, volume scattering in vegetation;
3. the **labels at each tree level**, and **regional styles** (one class, many looks);
4. **captions and referring expressions** with their masks;
5. a **large scene** (2048 px) and the same scene on an interactive **map**;
6. **real samples** (Sen1Floods11, LoveDA, DeepGlobe) when they are on this machine;
7. an interactive **explorer**, and 8. the generator's **throughput**.

The data comes from `rslab.data.synthetic`, a procedural world: no download, deterministic by
seed, fast enough that no notebook waits for it. All plotting code lives in `rslab.viz`.
""")

code("""
profile = "smoke"   # ci | smoke | full (papermill overrides these from notebooks/profiles/*.yaml)
seed = 0            # world seed: same seed, same scenes
n_scenes = 8        # scenes for the per-class statistics and the throughput measurement
size = 256          # scene side in pixels
large_size = 2048   # side of the large scene
data_root = None    # the dataset folder of rslab.data.catalog: when set (full profile), show each dataset found there
""", tags=["parameters"])

code("""
%matplotlib inline
import json
import time

import numpy as np

from rslab import viz
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.notebooks import start_run

run = start_run("00_data_tour", profile, seed)
world = SyntheticWorld(WorldConfig(size=size), seed=seed)
tree = world.tree
print(world)
print("regional styles:", world.style_names)
""")

md(r"""
## 1. The semantic tree

Classes form a tree of depth 3: level 1 is coarse (*built-up*, *water*, ...), level 3 the leaves
(*residential building*, *conifer forest*, ...). Label maps always store **leaf ids**; a coarser
label is the leaf's ancestor, `tree.to_level(labels, level)`. SkySense-VITA's Semantic Granularity
Annealing (notebook 03) trains from coarse to fine along exactly these levels. A leaf above the
deepest level (*road*, *river*) is its own descendant further down.

Every class has **synonyms**, used to write varied training text (captions, prompts). The ones
marked `held-out*` never appear in training text: notebook 03 prompts with them to test whether a
text encoder generalises to class names it has never been trained on.
""")

code("""
print(viz.format_tree(tree))
""")

code("""
for level in range(1, tree.depth + 1):
    print(f"level {level}: {tree.names(level)}")
leaf = "conifer forest"
print(f"\\n'{leaf}' at levels 1..3:", [tree.ancestor(leaf, l).name for l in range(1, tree.depth + 1)])
""")

md(r"""
## 2. One scene, two sensors

An optical sensor measures reflected sunlight: colours and textures we recognise. A SAR
(synthetic aperture radar) sensor sends microwave pulses sideways and measures the
**backscatter** coefficient σ⁰ of what comes back, in two polarisations: **VV** (sent and received
vertically) and **VH** (sent vertically, received horizontally). It sees through clouds and at
night, but it measures geometry and roughness, not colour, so the same scene looks very different.

In the false-colour SAR panel, red = VV, green = VH, blue = VV/VH ratio (a difference in dB).
""")

code("""
# the first scene showing (nearly) every class; deterministic for the seed
scene_idx = next((i for i in range(30) if len(np.unique(world.scene(i).labels)) >= 11), 0)
scene = world.scene(scene_idx)
print(f"scene {scene_idx}: {scene.meta['scene_type']}, style '{scene.meta['style_name']}', "
      f"optical {scene.optical.shape}, SAR {scene.sar.shape} (VV, VH in dB)")
viz.show_sample(scene, tree)
""", tags=["figure"])

md(r"""
### Speckle and the number of looks

Radar is coherent: each pixel sums the echoes of many scatterers with random phases, so even a
perfectly uniform field looks grainy. This **speckle** is multiplicative: the measured intensity is
$I = \sigma^0 \cdot n$ with $n \sim \mathrm{Gamma}(L, 1/L)$ (mean 1), where $L$ is the **number of
looks** (independent samples averaged). The coefficient of variation of $I$ is $1/\sqrt{L}$:
single-look data (L = 1) is very noisy, averaging more looks trades resolution for smoothness.
Below: the same scene (a 128 px corner), only the speckle changes. In dB the multiplicative
speckle becomes additive noise whose standard deviation the Gamma model predicts exactly,
$\frac{10}{\ln 10}\sqrt{\psi_1(L)}$ (5.57 dB at L = 1); each title compares it with what we
measure against a 1000-look rendering of the same scene (practically speckle-free).
""")

code("""
looks = {L: world.scene(scene_idx, n_looks=L).sar for L in (1, 4, 16)}
speckle_free = world.scene(scene_idx, n_looks=1000).sar
viz.show_looks(looks, channel="VV", reference=speckle_free, crop=128)
""", tags=["figure"])

md(r"""
### Why decibels

Backscatter spans orders of magnitude: water returns almost nothing, a building corner returns
thousands of times more. In linear units the histogram is a spike near zero with a long tail;
in **dB** ($10 \log_{10} I$) the values spread over a usable range where dark water and bright
walls are both visible, and multiplicative speckle becomes additive noise. The suite therefore
stores SAR in dB and clips it to `rslab.data.sar.SAR_DB_RANGE` = (-30, 5) dB before a model sees it.
""")

code("""
viz.plot_db_histogram(scene.sar, channel="VV")
""", tags=["figure"])

md(r"""
### What makes a class bright or dark

Three scattering mechanisms explain most of a SAR image. First the statistics over several scenes,
then one picture per mechanism.
""")

code("""
stats_scenes = [world.scene(i) for i in range(n_scenes)]
viz.plot_backscatter_by_class(stats_scenes, tree, level=2)
""", tags=["figure"])

md(r"""
**Specular reflection: water is dark.** A calm water surface is a mirror: the pulse bounces away
from the sensor and almost nothing returns. Water is the darkest thing in VV, which is why SAR is
the tool of choice for flood mapping (Sen1Floods11 below).
""")

code("""
# the scene with the most water among those rendered for the statistics above
water_scene = max(stats_scenes, key=lambda s: np.isin(s.labels, tree.leaf_ids("water")).mean())
viz.show_class_on_sar(water_scene, tree, "water", "VV", note="specular reflection, dark")
""", tags=["figure"])

md(r"""
**Double bounce: building walls are bright.** The pulse hits the ground, then the wall (or the
reverse) and comes straight back, like a corner reflector. The wall facing the sensor shows a very
bright line; behind the building the radar shadow is dark.
""")

code("""
viz.show_class_on_sar(scene, tree, "building", "VV", note="double bounce at walls, bright")
""", tags=["figure"])

md(r"""
**Volume scattering: vegetation is bright in VH.** Leaves and branches scatter the wave many
times and rotate its polarisation, so forests return much more cross-polarised (VH) energy than
bare soil or roads, whose smooth surfaces keep the polarisation.
""")

code("""
viz.show_class_on_sar(scene, tree, "forest", "VH", note="volume scattering, high VH")
""", tags=["figure"])

md(r"""
## 3. Labels at each level, and regional styles

The same pixels, labelled at three granularities. A model trained at level 1 only has to tell
*built-up* from *vegetation*; at level 3 it must tell a house from a factory.
""")

code("""
viz.show_levels(scene, tree)
""", tags=["figure"])

md(r"""
The same layout rendered in each **regional style**: roofs, crops, water and vegetation change
colour from region to region while the class stays the same. This intra-class variance is why
SkySense-VITA adds **visual prompts** (example images of the class from the target region) to
text prompts.
""")

code("""
styled = [world.scene(scene_idx, style=k) for k in range(len(world.style_names))]
viz.show_styles(styled, tree, "residential building", crop=min(128, size))
""", tags=["figure"])

md(r"""
## 4. Captions and referring expressions

Every scene comes with a caption and **referring expressions**: phrases that pick one object by
size, position, colour or relation, each with its mask. RS2-SAM2 (notebook 04) segments from such
phrases. The text uses training synonyms only; `text_split="heldout"` writes it with the held-out
synonyms instead, for testing.
""")

code("""
viz.show_referring(scene, max_expressions=4)
""", tags=["figure"])

code("""
for r in scene.referring:
    print(f"{r.text!r:55} -> {r.target_class:22} {int(r.mask.sum()):6d} px")
print("\\nheld-out wording:", world.scene(scene_idx, text_split="heldout").caption)
""")

md(r"""
## 5. A large scene, and a map

Real scenes are far larger than a network's input. Notebook 05 (ConInfer) cuts such a scene into
tiles, predicts each tile, then makes the predictions agree with the context of the whole scene
(a Gaussian mixture fitted to the features of all tiles). `world.large_scene` renders one with several
settlements, a river, lakes and fields. Every scene carries georeference `bounds`
(west, south, east, north in degrees), so it can be put on a map.
""")

code("""
t0 = time.perf_counter()
large = world.large_scene(size=large_size)
large_s = time.perf_counter() - t0
print(f"{large_size}x{large_size} scene rendered in {large_s:.1f} s, bounds {tuple(round(b, 5) for b in large.bounds)}")
viz.show_large_scene(large, tree, level=2)
""", tags=["figure"])

md(r"""
`rslab.viz.scene_map` puts an image or a label map on a leafmap (folium) map as a PNG overlay,
with no basemap tiles (pass `basemap="OpenStreetMap"` when online). Toggle the layers with the
control at the top right. The map is saved as an HTML file in the run's artifacts.

The map itself is drawn by the Leaflet JavaScript library, which folium loads from a CDN: in a
live notebook with a network connection you get the interactive map. The book and headless runs
show a static picture of the same two layers on longitude/latitude axes instead (a blank map
and a few megabytes of page would be all an offline reader got from the interactive one).
""")

code("""
from rslab.viz.tour import show_map_layers

m = viz.scene_map(viz.optical_to_display(large.optical), large.bounds, name="optical", opacity=1.0)
m = viz.scene_map(large.labels, large.bounds, tree=tree, level=2, name="labels (level 2)", m=m, opacity=0.6)
import folium
folium.LayerControl().add_to(m)
map_path = viz.save_map_html(m, run.artifacts / "map.html")
print("saved", map_path, f"({map_path.stat().st_size / 1e6:.1f} MB)")
if viz.widgets_enabled():  # a live kernel: the interactive map (Leaflet loads from its CDN)
    display(m)
else:  # headless / the book: the same layers as a static figure on lon/lat axes
    show_map_layers(large, tree, level=2, opacity=0.6)
""", tags=["figure"])

md(r"""
## 6. Real samples

The synthetic world is a stand-in; here is the real thing, when the small real samples (see
`real_samples/README.md` beside the project) are on this machine. Nothing below is required by
later notebooks.
""")

code("""
from rslab.data.readers import real_samples_dir

real = real_samples_dir()
print("real samples:", real if real is not None else
      "NOT FOUND on this machine (set RSLAB_REAL_SAMPLES to their folder); skipping this section.")
""")

md(r"""
**Sen1Floods11** (Bonafilia et al., 2020): a Sentinel-1 / Sentinel-2 chip from Spain with a
hand-labelled water mask. Flooded fields are dark in VV, the same specular physics as above.
""")

code("""
if real is not None and (real / "sen1floods11").is_dir():
    from rslab.data.readers import SEN1FLOODS11_CLASSES, find_sen1floods11_chip, read_sen1floods11

    s1f = read_sen1floods11(**find_sen1floods11_chip(real / "sen1floods11"))
    water_tree = viz.flat_tree(SEN1FLOODS11_CLASSES, ["#d9d9d9", "#2166ac"], name="sen1floods11")
    display(viz.show_sample(s1f, water_tree, sar_channel="VV",
                            title="Sen1Floods11: S2 RGB (B4,B3,B2), S1 VV, water mask"))
else:
    print("Sen1Floods11 sample not present; skipped.")
""")

md(r"""
**LoveDA** (Wang et al., 2021): 0.3 m aerial tiles with seven land-cover classes, and
**DeepGlobe Land Cover** (Demir et al., 2018): a 2448 px, 0.5 m scene, the kind of large image
notebook 05 tiles.
""")

code("""
if real is not None and (real / "loveda").is_dir():
    from rslab.data.readers import MMSegFolder
    from rslab.data.tree import load_tree

    loveda = MMSegFolder(real / "loveda", encoding="loveda")
    display(viz.show_sample(loveda[0], load_tree("loveda"), title=f"LoveDA tile ({len(loveda)} in the sample folder)"))
else:
    print("LoveDA sample not present; skipped.")
""")

code("""
dg_dir = real / "deepglobe_landcover" if real is not None else None
if dg_dir is not None and dg_dir.is_dir():
    from rslab.data.readers import read_deepglobe
    from rslab.data.tree import load_tree

    sat = sorted(dg_dir.glob("*_sat.jpg"))[0]
    dg = read_deepglobe(sat, sat.with_name(sat.name.replace("_sat.jpg", "_mask.png")))
    display(viz.show_large_scene(dg, load_tree("deepglobe"), max_px=612))
else:
    print("DeepGlobe sample not present; skipped.")
""")

md(r"""
**The dataset catalog** (`rslab.data.catalog`): the full profile reads the real datasets from one
`data_root` folder holding them under their official folder names. With `data_root` set, this cell
lists which are there and shows one item of each; without it, it prints the expected layout.
""")

code("""
from rslab.viz.tour import show_catalog

catalog_figures = show_catalog(data_root)
""")

md(r"""
## 7. Explore

Change the world seed, the regional style and the number of looks. The widget needs a live
kernel; the static figure below it shows what it draws at its starting values, so a headless run
(papermill, the book) still shows something.
""")

code("""
from rslab.viz.tour import world_explorer

# sliders at a live kernel (headless runs print a note); below them, the figure at the starting values
world_explorer(world, seed=seed, n_looks=4.0)
""", tags=["figure"])

md(r"""
## 8. Generator throughput

How fast does the world render training data? We time `n_scenes` scenes of 256 x 256 px,
each with optical, SAR, labels, instances, a caption and referring expressions, on this machine's
CPU, and record it in `artifacts/00_data_tour/results.json`.
""")

code("""
bench_world = SyntheticWorld(WorldConfig(size=256), seed=seed + 1)
bench_world.scene(0)  # warm-up
t0 = time.perf_counter()
for i in range(n_scenes):
    bench_world.scene(1 + i)
elapsed = time.perf_counter() - t0
scenes_per_s = n_scenes / elapsed
print(f"{n_scenes} scenes of 256x256 in {elapsed:.2f} s: {scenes_per_s:.1f} scenes/s "
      f"({1000 / scenes_per_s:.0f} ms per scene)")
""")

code("""
results_path = run.save_results({
    "scenes_per_s": scenes_per_s,
    "large_scene_s": large_s,
    "large_size": large_size,
    "n_scenes_timed": n_scenes,
})
print(open(results_path).read())
""")

md(r"""
## This run's numbers
""")

code("""
viz.report(
    "On this machine ({device}) the world rendered **{scenes_per_s:.1f} scenes per second** "
    "({ms:.0f} ms for a 256 x 256 scene with optical, SAR, labels, a caption and referring "
    "expressions), and the {large_size} x {large_size} px scene in **{large_s:.1f} s**. "
    "Compare the time per scene with the seconds per training step that the later notebooks "
    "print: as long as rendering a batch takes less than a step, generating data on the fly "
    "costs the training little.",
    device=json.load(open(results_path))["device"], scenes_per_s=scenes_per_s, ms=1000 / scenes_per_s,
    large_size=large_size, large_s=large_s)
""", tags=["report"])

md(r"""
## Summary

- Labels are leaf ids of a semantic tree; coarser levels are one lookup away (`tree.to_level`).
- SAR is in dB, clipped to (-30, 5) dB; speckle is multiplicative Gamma noise whose standard
  deviation in dB falls with the number of looks as $\frac{10}{\ln 10}\sqrt{\psi_1(L)}$; water
  is dark, building walls bright in VV, vegetation bright in VH.
- The same class looks different in each regional style: the reason for visual prompts.
- Scenes carry captions, referring expressions with masks, and map bounds.

What this notebook does **not** show: how close the procedural world is to real imagery. The real
samples of section 6 (when present) are the check; the synthetic SAR has no terrain and no
layover, and its radar shadow (behind buildings only) is cast at one fixed incidence angle.

## Exercises

1. Set `n_looks=1` in `world.scene(...)` and redo the per-class box plot: which classes can you
   still separate in VV alone? Compare the spread within each class with the Gamma model's
   standard deviation of 5.57 dB at L = 1 (the whiskers span 5-95%, about 3.3 standard deviations
   for a Gaussian).
2. Find a leaf whose synonyms are held out (`viz.format_tree` marks them) and read its caption
   under `text_split="heldout"`: is the held-out wording one a text encoder could link to the seen
   name?
3. Draw `viz.show_levels(scene, tree, alpha=0.5)`: at which level does the regional style stop
   mattering to the eye?
4. Time `world.large_scene` at 1024 and 2048 px: does the cost grow with the area?

Next: **01 · SAR alignment**: teaching a SAR encoder to speak the optical encoder's language.
""")


if __name__ == "__main__":
    nb.write()
