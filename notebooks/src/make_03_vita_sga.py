"""Write notebooks/03_vita_sga.ipynb (outputs empty). Run from the repo root:

    .venv/bin/python notebooks/src/make_03_vita_sga.py

Edit this file, not the notebook: the notebook is generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbgen import Notebook  # noqa: E402

nb = Notebook("03_vita_sga")
md, code = nb.md, nb.code


md(r"""
# 03 · SkySense-VITA: in-context segmentation from visual, text and fused prompts

**SkySense-VITA** (CVPR 2026) segments a *target* image given a *prompt* for each class, with no
fine-tuning: a **visual** prompt (another image plus a mask, box or clicks of the class), a
**text** prompt (the class name), or both (**fused**). It works on optical and SAR imagery. Its
key idea is *prompt-and-prediction decoupling*:

* **Prompt flow.** Masked average pooling of the prompt image's features under the annotation gives
  visual tokens `P_V`; the text encoder gives `P_T` (here the frozen MiniLM).
* **VITA-Former** (decoupled fusion): learnable **modality prototypes** `P_M` (one for optical,
  one for SAR) enter `P_V` by cross-attention (`P'_V`); `P_F` starts as a linear projection of
  `P_T`; a **masked self-attention** over `[P'_V, P_T, P_F]` keeps V and T isolated while only
  `P_F` sees both; cross-attention to the target features gives in-context queries `Q_ctx^{V,T,F}`.
* **VITA-Decoder** (decoupled prediction): Mask2Former-style, with three replicated sets of
  segmentation queries separated by a **block-diagonal** self-attention mask, masked
  cross-attention, masks `M_k = F_mask(Q'_seg, phi(F_tgt))`, and **prompt-guided classification**
  `P_k = softmax(cos(Q'_seg, Q_ctx^k) / tau)` plus a no-object class.
* **Semantic Granularity Annealing (SGA)**: a coarse-to-fine curriculum over a semantic tree:
  `mu(t) = 1 + (L-1)(1 - cos(pi t/T))/2` and `p(l|t) ∝ exp(-|l - mu(t)| / tau_SGA)`; pixels are
  supervised with their ancestor at the sampled level `l`.
* **Loss**: the Hungarian-matched set loss (class CE + point-sampled BCE + Dice, no-object for
  unmatched queries) summed over the three modes `k ∈ {V, T, F}` (and every decoder layer).

Code: `rslab.models.vita` (model), `rslab.recipes.vita` (episodes, loss, training, evaluation),
`rslab.recipes.vita_study` (this notebook's data, model factory, ablations, LoveDA transfer, results),
`rslab.data.episodes`, `rslab.curriculum`, `rslab.losses.set_prediction`, `rslab.viz.vita` (SGA figures).

This notebook trains a small VITA on the synthetic world (optical + SAR, 3-level tree), evaluates
it on **held-out scenes with prompts from other held-out scenes**, runs the paper's ablations at
a small equal budget, and tries one-shot visual prompting on real LoveDA crops.
""")

code("""
profile = "smoke"        # ci | smoke | full (papermill overrides from notebooks/profiles/*.yaml)
seed = 0
size = 64                # synthetic scene side (px); 64 keeps the CPU run in minutes
n_train = 96             # training scenes (prompts of training episodes come from these too)
n_eval = 32              # held-out target scenes; prompts come from another n_eval held-out scenes
preset = "tiny"          # VITAConfig preset: tiny | small | base
steps = 1000             # training steps of the main model
batch_size = 8           # targets per episode
ablation_steps = 150     # steps of every ablation run (all ablations share this budget)
ablations = False        # run the ablation study: 5 runs x ablation_steps, about 140 s more on a 2-core CPU
tau_sga = 0.5            # tau_SGA of p(l|t)
sar_fraction = 0.5       # share of SAR episodes
text_templates = "average"  # training text prompts: average (the 3 default templates, as at inference) or sample
text_noise = 0.0         # std of Gaussian noise on training text embeddings (0 disables; see section 4)
train_names = "train"    # training class names: train (own name + training synonyms) or region (also same-pixel nodes)
ratio_seeds = 1          # training seeds for the unseen-name ratio (each extra seed retrains the main model)
headline_level = 1       # tree level of the headline metrics (1: 5 coarse classes .. 3: 12 leaves)
encoder_source = "conv"  # "conv" (trained here) | "qsacl" (notebook 02's backbone) | "auto" (qsacl when present)
use_real = True          # one-shot prompting on ../shared/real_samples/loveda when present
num_threads = 2          # CPU threads (use 1 on a busy shared machine)
dataset = "synthetic"    # "synthetic" | "loveda": train on its train split, evaluate on its val split (full profile)
text_weights = None      # None: the offline MiniLM; a registry name, e.g. "clip-vit-b16-openai": its CLIP text tower
data_root = None         # the dataset folder of rslab.data.catalog (full profile)
weights_dir = None       # folder of the official weights; None: $RSLAB_WEIGHTS_DIR (rslab.weights)
device = "cpu"           # "cpu" | "auto" (a GPU when there is one) | "cuda"
""", tags=["parameters"])

code("""
import functools, os, time
os.environ.setdefault("HF_HUB_OFFLINE", "1"); os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
import numpy as np
import torch
import matplotlib.pyplot as plt

from rslab import viz
from rslab.curriculum import sga_schedule
from rslab.data.episodes import make_episode
from rslab.models import vita as V
from rslab.notebooks import resolve_device, start_run
from rslab.recipes import vita as R
from rslab.recipes import vita_study as S
from rslab.viz.vita import plot_sga_schedule, sga_tau_explorer

torch.set_num_threads(num_threads)
torch.manual_seed(seed)
run = start_run("03_vita_sga", profile, seed)
t_start, c_start = time.time(), time.process_time()
device = resolve_device(device, profile).type  # the full profile never falls back to the CPU silently
""")

md(r"""
The data (`S.vita_data`): on the synthetic world, `n_train` training scenes, `n_eval` held-out
target scenes and `n_eval` other held-out scenes to prompt them, in optical and SAR; with
`dataset = "loveda"` (full profile), LoveDA's train split and its val split halved into targets and
prompts, optical only. The text encoder stays frozen: the offline MiniLM, or a CLIP text tower
named by `text_weights`.
""")

code("""
if dataset != "synthetic" or text_weights is not None:  # every missing input in one error, within seconds
    from rslab.data.catalog import require_inputs

    print(require_inputs([text_weights] if text_weights else [], [] if dataset == "synthetic" else [dataset],
                         weights_dir, data_root))
tree, train_pool, eval_targets, eval_prompts, modalities, in_chans = S.vita_data(
    dataset, size=size, n_train=n_train, n_eval=n_eval, seed=seed, data_root=data_root)
text_encoder = S.text_encoder_for(text_weights, weights_dir, device)
print(tree.pretty())
print(f"pools ready in {time.time() - t_start:.1f} s: {len(train_pool)} train, {len(eval_targets)} eval targets, "
      f"{len(eval_prompts)} eval prompt scenes")
""")

md(r"""
## 1 · Semantic Granularity Annealing

The synthetic world's tree has `L = 3` levels (5 → 8 → 12 classes). SGA moves the target
granularity `mu(t)` from 1 to `L` on a cosine and samples the level of each step from
`p(l|t) ∝ exp(-|l - mu(t)|/tau_SGA)`. Unlike hard stage switching, coarse levels keep a share of
the steps late in training (the paper credits this with avoiding forgetting of coarse classes).
""")

code("""
sga_mu_t, sga_probs = sga_schedule(steps, tree.depth, tau_sga)   # mu(t) and p(l | t) at every step
plot_sga_schedule(sga_mu_t, sga_probs, tau_sga)
""", tags=["figure"])

md("Explore `tau_SGA` (small = a sharp, almost hard schedule; large = levels mixed all along):")

code("""
# a slider at a live kernel; a headless run draws a sharp schedule (0.1) to compare with the one above
sga_tau_explorer(functools.partial(sga_schedule, steps, tree.depth), tau=tau_sga, static_tau=0.1)
""")

md(r"""
## 2 · The model

`VITAConfig.base()` follows the paper's head (D = 256, 100 queries per mode, 9 decoder layers).
The paper reports about **18M** parameters for VITA-Former + VITA-Decoder; here is the count,
with the pixel decoder (FPN) and the text projection listed separately, since they are needed too.
The notebook trains the `tiny` preset on the CPU.
""")

code("""
parts = {name: V.parameter_breakdown(V.VITA(getattr(V.VITAConfig, name)())) for name in ("tiny", "base")}
for name, p in parts.items():
    print(f"{name:5s}", {k: f"{v / 1e6:.2f}M" for k, v in p.items()})
base_parts = parts["base"]
""")

md(r"""
The two attention masks that implement the decoupling (white = may attend). Left: VITA-Former's
prompt self-attention over `[P'_V, P_T, P_F]` for K = 4 classes: V and T only see themselves,
F sees all. Right: VITA-Decoder's block-diagonal self-attention over the three query sets
(`N` segmentation queries + `K` in-context queries per mode).
""")

code("""
cfg = getattr(V.VITAConfig, preset)()
k_demo, n = 4, cfg.num_queries
per = n + k_demo
mode_id = torch.arange(3 * per) // per
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
axes[0].imshow(~V.prompt_attention_mask(k_demo, "vita"), cmap="gray"); axes[0].set_title("VITA-Former: [V | T | F]")
axes[1].imshow(mode_id[:, None] == mode_id[None, :], cmap="gray"); axes[1].set_title("VITA-Decoder: V | T | F blocks")
for ax in axes: ax.set_xlabel("key"); ax.set_ylabel("query")
plt.show()
""", tags=["figure"])

md(r"""
### Encoder
The paper's encoder is SkySense's factorised encoder, pretrained: it holds nearly all of the
model's 1.1B parameters (VITA-Former and decoder are 1.6% of them). Here the default encoder is
a small conv pyramid with one stem per modality, trained from scratch together with the heads.
Notebook 02 (QSACL pre-training) saves a SkySense-V2-style backbone in
`artifacts/02_qsacl_pretraining/`; with `encoder_source = "qsacl"` it replaces the conv encoder
through `V.BackboneAdapter` (and is fine-tuned); `"auto"` uses it whenever it is present. The
smoke default stays `"conv"`: the conv encoder is faster on the CPU and keeps the ablations
comparable. Notebook 01's aligned SAR encoder
(`artifacts/01_sar_alignment/`) plays the role of the paper's stage-1 alignment; VITA's stage 2
here trains SAR end-to-end instead, so it is only reported when present.
""")

code("""
from rslab.notebooks import artifacts_root

qsacl_dir = artifacts_root() / "02_qsacl_pretraining"
sar_dir = artifacts_root() / "01_sar_alignment"
print("notebook 02 backbone:", "found" if (qsacl_dir / S.QSACL_WEIGHTS).is_file() else "absent", f"({qsacl_dir})")
print("notebook 01 SAR encoder:", "found" if sar_dir.is_dir() and any(sar_dir.glob("*.safetensors")) else "absent",
      f"({sar_dir})")
# one factory for every model of this notebook (main, extra seeds, ablations): seed and overrides per call;
# the text width follows the text encoder in use (MiniLM: 384; the base preset assumes CLIP's 512)
build_model = functools.partial(S.build_vita, preset, text_encoder.dim, seed=seed, encoder_source=encoder_source,
                                qsacl_dir=qsacl_dir, in_chans=in_chans)
""")

md(r"""
## 3 · Training (stage 2: in-context pre-training with SGA)

Every step is an **episode**: `batch_size` target scenes of one modality (optical or SAR), and for
every class of the sampled level a prompt triplet from *another* training scene, preferably of
another regional style (so a visual prompt has to bridge intra-class variance). Class names are
drawn from the training names (the canonical name and its training synonyms, each equally
likely). The loss sums the set loss of the V, T and F branches and of every decoder layer (deep
supervision). For speed, one criterion call per mode handles all decoder layers at once (the
layers' predictions stacked on the batch axis; the Hungarian cost matrices of a whole batch are
computed together, one `linear_sum_assignment` per image): less CPU per step than one call per
layer and image, with the same loss.
""")

code("""
recipe = R.VITARecipe(max_steps=steps, batch_size=batch_size, sar_fraction=sar_fraction, tau_sga=tau_sga, seed=seed,
                      text_templates=text_templates, text_noise=text_noise, train_names=train_names)
model = build_model()
t0, c0 = time.time(), time.process_time()
from rslab.recipes.budget import print_budget, time_step

first = next(iter(R.episode_factory(train_pool, recipe)(0)))  # images per step: targets + prompts
seconds = None
if dataset != "synthetic":  # time one forward + backward on the training device (full profile)
    model.to(device)
    first = first.to(device)
    seconds = time_step(lambda: R.VITALoss(text_encoder, recipe)(model, first)[0], model)
print_budget("VITA in-context training", steps, batch_size + len(first.prompt_images), seconds, device)
history = R.train(model, train_pool, text_encoder, recipe, log_every=max(1, steps // 40), device=device)
train_wall, train_cpu = time.time() - t0, time.process_time() - c0
print(f"trained {steps} steps in {train_wall:.0f} s wall, {train_cpu:.0f} s CPU")

fig, ax = plt.subplots(figsize=(7, 3))
st = [h["step"] for h in history]
for mode in "VTF":
    ax.plot(st, [h[f"loss_{mode}"] for h in history], label=f"mode {mode}")
ax2 = ax.twinx(); ax2.plot(st, [h["level"] for h in history], "k:", label="mean level")
ax2.set_ylabel("mean SGA level")
ax.set_xlabel("step"); ax.set_ylabel("set loss (mean over layers)"); ax.legend(); ax.set_title("training loss per mode")
plt.show()
""", tags=["figure"])

md(r"""
## 4 · Evaluation on held-out scenes

Targets and prompts are scenes never used in training; each class gets a one-shot mask prompt
from a held-out prompt scene of another style. mIoU per mode (V, T, F), per modality and per
tree level. **Headline level**: the leaf level (12 classes, including 3-6 px cars and trucks at
64 px) is the hardest and the short CPU budget does not reach it; the headline keys use
`headline_level` (level 1 by default, 5 classes) and every level is reported below.

The number of training steps and the recipe's options were chosen on a separate validation
split, never on these held-out scenes (the book's lab notes record those runs).
""")

code("""
# per_class[(names, level)]: optical T-mode IoU per class (kept for section 4's name transfer)
table, per_class = {}, {}
for modality in modalities:
    for level in range(1, tree.depth + 1):
        ious = R.evaluate(model, eval_targets, eval_prompts, text_encoder, modality=modality, level=level,
                          names="canonical", seed=seed, per_class=True)
        table[(modality, level)] = {m: float(np.nanmean(v)) for m, v in ious.items()}
        if modality == "optical":
            per_class[("canonical", level)] = ious["T"]
for level in range(1, tree.depth + 1):
    per_class[("heldout", level)] = R.evaluate(model, eval_targets, eval_prompts, text_encoder, modality="optical",
                                               level=level, modes=("T",), names="heldout", seed=seed,
                                               per_class=True)["T"]
unseen = {level: float(np.nanmean(per_class[("heldout", level)])) for level in range(1, tree.depth + 1)}
print(f"{'modality':9s} {'level':>5s} {'K':>3s} {'V':>6s} {'T':>6s} {'F':>6s}  T(unseen names)")
for (modality, level), r in table.items():
    extra = f"{unseen[level]:.3f}" if modality == "optical" else ""
    print(f"{modality:9s} {level:5d} {tree.num_classes(level):3d} {r['V']:6.3f} {r['T']:6.3f} {r['F']:6.3f}  {extra}")
head = table[("optical", headline_level)]
""")

code("""
sar_row = table.get(("sar", headline_level))  # None when the dataset has no SAR (LoveDA in the full profile)
viz.report(
    "**This run** ({steps} training steps, {train_wall:.0f} s on this machine), optical, level {level} "
    "({k} classes): **V {v:.3f}, T {t:.3f}, F {f:.3f}** mIoU; text prompts with held-out names "
    "{unseen:.3f}, i.e. {ratio:.0%} of the seen names. "
    + ("SAR input: V {sv:.3f}, T {st:.3f}, F {sf:.3f}. " if sar_row else "This dataset has no SAR input. ")
    + "The smoke-profile targets: each optical mode at least 0.5, F within 0.02 of the better "
    "unimodal mode, unseen names at least 80% of seen ones.",
    steps=steps, train_wall=train_wall, level=headline_level, k=tree.num_classes(headline_level),
    v=head["V"], t=head["T"], f=head["F"], unseen=unseen[headline_level],
    ratio=unseen[headline_level] / max(head["T"], 1e-9),
    **({"sv": sar_row["V"], "st": sar_row["T"], "sf": sar_row["F"]} if sar_row else {}))
""", tags=["report"])

md(r"""
### Text prompts with unseen names
"T(unseen names)": every class name is replaced by one of the tree's **held-out synonyms**, never
used in any training text (e.g. "lagoon" for lake, "developed land" for built-up). Only the frozen
MiniLM connects such a name to the trained class. First ask MiniLM alone: for each held-out name,
which class's *training* names (template-averaged, as the prompts are) is it closest to? At level 1
two names are misplaced: "developed land" sits nearer the bare-land names ("bare land", "barren
land", "unvegetated land": the word *land*) and "exposed ground" nearer built-up. Even a one-to-one
assignment of the five held-out names to the five classes by MiniLM cosine swaps built-up and
bare land. So the text branch must *not* simply inherit MiniLM's neighbourhoods: it has to weight
the directions that separate the classes in training (the modifier "developed" is close to
"built" in MiniLM), and whether it does decides the built-up IoU, the one big class at stake.

How the training text is built (`R.VITARecipe`; the paper does not describe it, so these are our
choices): the class name of every training episode is drawn among the canonical name and the
training synonyms (held-out ones never); every name is embedded as the average over 3 templates
("a satellite image of {}." ...), CLIP's prompt ensembling, in training and at inference. Other
training-text variants (embedding noise, more names per class, sampled templates, a regulariser
that keeps MiniLM's geometry) were tried during development and are recorded in the lab notes;
none made the unseen names reliable. Whether a run keeps a misplaced name is close to a coin flip,
so read the ratio together with the per-class rows and `lost` that the next cell prints;
`ratio_seeds > 1` retrains the main model with more seeds to show the spread.
""")

code("""
neighbours = R.heldout_name_neighbours(tree, text_encoder, headline_level, train_names=train_names)
for r in neighbours:
    flag = "" if r["nearest"] == r["true"] else "   <- closer to another class"
    print(f"{r['name']:22s} true {r['true']:12s} sim {r['sim_true']:.2f} | "
          f"nearest {r['nearest']:12s} {r['sim_nearest']:.2f}{flag}")
# the main model's per-class IoUs come from the evaluation above (same episodes); extra seeds evaluate afresh
transfer = [R.name_transfer_summary(tree.names(headline_level), per_class[("canonical", headline_level)],
                                    per_class[("heldout", headline_level)])]
# the same recipe, other training seeds (model and episodes): the spread of the ratio
transfer += S.name_transfer_over_seeds(build_model, train_pool, eval_targets, eval_prompts, text_encoder, recipe,
                                       [seed + extra for extra in range(1, ratio_seeds)], level=headline_level,
                                       eval_seed=seed, device=device)
print()
print(f"T-mode IoU per class at level {headline_level}: seen names vs held-out synonyms (main model)")
for name, a, b in zip(tree.names(headline_level), transfer[0]["seen_per_class"], transfer[0]["unseen_per_class"]):
    print(f"  {name:22s} {a:.3f}  {b:.3f}{'   <- lost with its held-out name' if name in transfer[0]['lost'] else ''}")
for i, t in enumerate(transfer):
    print(f"training seed {seed + i}: seen {t['seen']:.3f}  unseen {t['unseen']:.3f}  ratio {t['ratio']:.2f}  "
          f"lost: {t['lost'] or 'none'}")
""")

md(r"""
### A prediction gallery

One held-out scene segmented three ways by the same model (visual prompts only, text prompts
only, both), then a second scene with both. The prompt column shows the first of the one-shot
prompt scenes (from another regional style) with its class mask, or the class names the text
branch reads; the score is the mean IoU over the classes present in the scene.
""")

code("""
rng = np.random.default_rng(seed)
ep = make_episode(eval_targets, [0, 1], eval_prompts, headline_level, "optical", rng, names="canonical")
preds = {mode: R.predict(model, ep, text_encoder, mode) for mode in ("V", "T", "F")}
to_leaf = R.level_to_leaf(tree, headline_level)
prompt_image = ep.prompt_images[0].numpy()[:3].transpose(1, 2, 0)
prompt_class = int(ep.prompt_masks[0].flatten(1).any(1).nonzero()[0])
prompt_mask = ep.prompt_masks[0, prompt_class].numpy()
names_text = "class names: " + ", ".join(ep.class_names)
gallery = []
for b, mode in [(0, "V"), (0, "T"), (0, "F"), (1, "F")]:
    visual = {"prompt_image": prompt_image, "prompt_mask": prompt_mask} if mode != "T" else {}
    prompt = {"V": f"visual: {len(ep.prompt_images)} one-shot masks, e.g. '{ep.class_names[prompt_class]}'",
              "T": names_text, "F": "visual + text (fused)"}[mode]
    gallery.append({"image": eval_targets.optical[b].numpy()[:3].transpose(1, 2, 0), "prompt": prompt,
                    "pred": to_leaf[preds[mode][b].numpy()], "gt": eval_targets.labels[b].numpy(), **visual})
viz.show_gallery(gallery, tree=tree, level=headline_level,
                 title=f"Held-out scenes, level {headline_level}: V, T and F prompts")
""", tags=["figure"])

md(r"""
### Visual prompt quality (evaluation only)
The same model, prompted with a full mask, a bounding box, or 5 clicks (3x3 discs) of the class
in the prompt image (the paper: V-only mIoU rises from points to box to mask). Mind the kind of
class: the paper's box result is on objects (iSAID); most synthetic classes are *stuff* (fields,
forest, water), whose bounding box covers much of the image and so mostly pools other classes,
while a few clicks stay on the class.
""")

code("""
prompt_quality = {kind: R.evaluate(model, eval_targets, eval_prompts, text_encoder, modality="optical",
                                   level=headline_level, modes=("V",), annotation=kind, seed=seed)["V"]
                  for kind in ("point", "box", "mask")}
print({k: round(v, 3) for k, v in prompt_quality.items()})
""")

md(r"""
## 5 · Ablations (each a short run with the same budget, `ablation_steps`)

* **reference**: VITA-Former + decoupled three-mode training + SGA;
* **naive fusion** (`fusion="naive"`): `P_F` = linear(concat(P_V, P_T)) and unmasked attention;
* **fused-only training** (`train_modes=("F",)`): only the fused branch is supervised. Does
  V-only / T-only inference collapse without decoupling?
* **fine labels only** and **hard stage switching** instead of SGA.

All runs share the seed, data and step budget; mIoU is optical, on the held-out scenes.

They are off in the smoke profile (`ablations = False`): five more trainings. Turn them on with
`rslab notebooks run --only 03 -p ablations=True` (and `-p ablation_steps=...`); the `ci` profile
runs them for 2 steps (a code check) and the `full` profile for 2000. A table from a smoke run with
the ablations on is in the lab notes.
""")

code("""
ablation = {}  # {run: {level: {mode: mIoU}}}, optical, held-out scenes
if ablations:
    ablation = S.run_ablations(build_model, train_pool, eval_targets, eval_prompts, text_encoder, recipe,
                               steps=ablation_steps, level=headline_level, device=device)
""")

md(r"""
## 6 · Real imagery: one-shot visual prompting on LoveDA

A prompt crop from one LoveDA image with its labels, applied to another LoveDA image. The model
was trained only on synthetic scenes, so this measures transfer, whatever it shows. LoveDA is
RGB-only while the model's optical stem takes RGB+NIR: we fill the 4th channel with the green
band as a crude NIR proxy (vegetation is brighter in NIR and green than in red and blue);
images are resized to 256 px (about 1.2 m pixels instead of 0.3 m, closer to the 1 m synthetic
world). Text prompts use LoveDA's class names.
""")

code("""
from rslab.data.readers import real_samples_dir
from rslab.data.tree import load_tree

# prompt: LoveDA image 0 with its labels; targets: every other image; classes absent from the prompt not scored
real, example = S.loveda_oneshot(model, text_encoder, real_samples_dir() if use_real else None)
if example is not None:
    viz.show_gallery([example], tree=load_tree("loveda"), title="LoveDA one-shot transfer, fused prompts (last image)")
""")

md("## 7 · Save the model and the results")

code("""
weights_path, config_path = S.save_vita(model, run.artifacts, preset, encoder_source)
print("saved", weights_path, "and", config_path.name)
""")

md(r"""
The headline keys of `results.json` (mIoU on the optical held-out scenes at `headline_level`, the
name transfer and its spread over training seeds, SAR, the budget and the paper-size parameter count):
""")

code("""
metrics = {
    "headline_level": headline_level,
    "miou_visual": head["V"], "miou_text": head["T"], "miou_fused": head["F"],
    "miou_text_unseen_synonyms": unseen[headline_level],
    "text_unseen_over_seen": unseen[headline_level] / max(head["T"], 1e-9),
    # per class at the headline level (None: class neither present nor predicted)
    "text_seen_iou_per_class": [v if np.isfinite(v) else None for v in transfer[0]["seen_per_class"]],
    "text_unseen_iou_per_class": [v if np.isfinite(v) else None for v in transfer[0]["unseen_per_class"]],
    "text_unseen_lost_classes": transfer[0]["lost"],
    "text_unseen_over_seen_per_seed": [t["ratio"] for t in transfer],
    "text_unseen_over_seen_min": min(t["ratio"] for t in transfer),
    "text_unseen_over_seen_mean": float(np.mean([t["ratio"] for t in transfer])),
    "train_names": train_names,
    "heldout_names_nearest_other_class": int(sum(r["nearest"] != r["true"] for r in neighbours)),
    # None where the dataset has no SAR (LoveDA): not measured, never a made-up number
    "miou_sar_fused": table[("sar", headline_level)]["F"] if "sar" in modalities else None,
    "miou_sar_visual": table[("sar", headline_level)]["V"] if "sar" in modalities else None,
    "miou_sar_text": table[("sar", headline_level)]["T"] if "sar" in modalities else None,
    "train_steps": steps, "train_wall_s": train_wall, "train_cpu_s": train_cpu,
    "params_base_former_decoder": base_parts["former+decoder"],
    "params_base_with_pixel_decoder_text_proj": base_parts["former+decoder+pixel_decoder+text_proj"],
}
""")

md(r"""
Then every mIoU by modality, mode and level, the unseen-name mIoU per level, the visual prompt
kinds, the ablations and the LoveDA transfer, one key each (`S.flat_metrics`):
""")

code("""
import json

metrics.update(S.flat_metrics(table, unseen, prompt_quality, ablation, real))
run.save_results(metrics)
print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()
                  if not k.startswith("ablation")}, indent=1))
print(f"notebook time so far: {time.time() - t_start:.0f} s wall, {time.process_time() - c_start:.0f} s CPU")
""")

md(r"""
## What it shows and what it does not

* The three modes come from **one** model: V and T branches never see each other (the masks of
  section 2; `tests/test_vita.py` verifies that perturbing the visual prompt leaves T outputs
  bit-identical), and the fused branch reads both.
* Text prompts with **unseen synonyms** go through the frozen text encoder, and MiniLM misplaces
  some held-out names (section 4). The trained text branch sometimes overrides that and sometimes
  does not; a stronger text encoder (CLIP in the paper) or richer class descriptions are the real
  fix.
* `P_F` starts as a projection of `P_T`, so with a short budget the fused branch can do little
  more than follow the text branch: where this run's F is within a point or two of T, that is
  what happened. The paper's gain of fused over text comes from visual prompts that carry what
  text cannot (intra-class appearance).
* The ablations (when run) rank the variants only if the reference run at `ablation_steps` is
  itself well off its initial plateau: compare it with the main model's numbers first. One run
  per variant and one seed: differences of a few points are noise.
* Not shown: anything about the paper's absolute numbers. Its model has 1.1B parameters,
  aligned on optical–SAR pairs (stage 1) and then in-context pre-trained on Sky-VT-300k (300k+
  samples, 176 classes, stage 2); this one is trained in minutes on a procedural world, and the
  LoveDA test is a zero-training transfer check.
""")

nb.over_seeds()

md(r"""
## Summary

* VITA decouples prompt and prediction: VITA-Former turns visual prompts $P_V$, text prompts
  $P_T$ and their fusion $P_F$ into class queries under attention masks that keep V and T apart,
  and one decoder predicts from any of them.
* SGA samples the supervision level from a schedule $\mu(t)$ that moves from coarse to fine
  during training (section 1), instead of training on the finest labels only.
* One-shot visual prompts must bridge regional styles; text prompts must bridge names; the
  gallery shows where each fails on the same scene.

## Exercises

1. Set `tau_sga` to a very small and a very large value (section 1's slider shows the schedules)
   and retrain: which levels gain, which lose?
2. Run with `ablations=True` and `ablation_steps` equal to `steps`: does fused-only training
   collapse the unimodal modes, as the paper's ablation reports (V 53.2 -> 33.1 mIoU on FloodNet)?
3. Prompt with boxes or points instead of masks (section 4's prompt-quality cell): why does a box
   hurt more on *stuff* classes (fields, water) than on objects?
4. Set `train_names="region"` and compare the per-class rows with held-out names: which class is
   lost, and which MiniLM neighbour explains it?
""")


if __name__ == "__main__":
    nb.write()
