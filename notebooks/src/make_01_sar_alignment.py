"""Write notebooks/01_sar_alignment.ipynb (outputs empty). Run from the repo root:

    .venv/bin/python notebooks/src/make_01_sar_alignment.py

Edit this file, not the notebook: the notebook is generated.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from nbgen import Notebook  # noqa: E402

nb = Notebook("01_sar_alignment")
md, code = nb.md, nb.code


md(r"""
# 01 · Optical–SAR image-level alignment (SkySense-VITA, stage 1)

**The point of this notebook.** SAR is hard to learn from: speckle, the dB scale and a geometry
that has nothing to do with colour put a wide *domain gap* between SAR and optical images, and
there are almost no SAR captions to learn language from. SkySense-VITA (CVPR 2026, Sec.
"Image-level Alignment Pre-training") sidesteps both with **indirect alignment**: take an optical
encoder $E_{opt}$ that already lives in an optical–text space, **freeze it**, and train only a SAR
encoder $E_{SAR}$ to land on the same features as the co-registered optical image. SAR images then
*inherit* what the optical–text space can do (retrieve the matching optical image, be classified
by a text prompt) although the SAR encoder never saw a single caption.

For a registered pair $(x_{opt}, x_{SAR})$ we draw two augmented SAR views $x^a_{SAR}, x^b_{SAR}$,
encode and **globally average-pool** them into $f_{opt}, f^a_{SAR}, f^b_{SAR}$ and minimise

$$
\mathcal{L}_{img} = \lambda_{CL}\,\mathcal{L}_{CL}(f^a_{SAR}, f^b_{SAR}) +
\lambda_{CMA}\,\mathcal{L}_{CMA}(f^a_{SAR}, f_{opt})
$$

- $\mathcal{L}_{CL}$, intra-SAR contrastive: two views of one SAR image agree (robust SAR features);
- $\mathcal{L}_{CMA}$, cross-modal alignment: the SAR feature picks out its own optical feature
  among the batch (anchors SAR to the fixed optical space).

The paper does not print the form of either term; we use the symmetric InfoNCE of CLIP for both
(`rslab.losses.contrastive`).

**What is not the paper's setting, plainly.** The paper's $E_{opt}$ is a large pretrained
encoder aligned with a CLIP text tower. The default (smoke) profile has no pretrained CLIP on disk,
and freezing a *random* optical encoder would teach SAR nothing. So step 1 below **trains a small
optical encoder for a short while against the frozen MiniLM sentence encoder** on the synthetic
captions and class-name prompts (*locked-text tuning*, as in LiT), and **then freezes it**. Only
after that does the paper's stage 1 start. The full profile runs the same code with larger
encoders and far more steps (a pretrained open_clip vision tower is not wired in yet).
Two more additions are ours and named where they happen: *layout captions* for that stand-in
teacher (step 2), and a *bank* of the cached frozen optical features as the negatives of
$\mathcal{L}_{CMA}$ (step 3).

Steps: 1. data; 2. an optical encoder in an optical–text space; 3. SAR alignment with
$\mathcal{L}_{img}$; 4. what SAR inherited: retrieval and zero-shot text classification, before vs
after; 5. ablation of the two loss terms; 6. the embedding space in 2-D; 7. a real Sentinel-1/2
chip; 8. an explorer widget; 9. saving the aligned encoders for later notebooks.
""")

code("""
profile = "smoke"       # ci | smoke | full (papermill overrides these from notebooks/profiles/*.yaml)
seed = 0
image_size = 64         # synthetic scene side (px)
n_train = 512           # step 2: optical images + captions for locked-text tuning (scenes 0..n_train-1)
n_align = 1024          # step 3: optical/SAR pairs for alignment (scenes 0..n_align-1; no text needed)
eval_per_class = 20     # held-out evaluation pairs per dominant class (5 classes)
encoder = "tiny"        # ImageEncoderConfig preset: tiny | small | base
embed_dim = 64          # overrides of the preset (None keeps the preset's value)
depth = 2
num_heads = 2
# sar_depth: 1 trains as well as 2 at 60 percent of the cost
sar_depth = 1           # blocks of the SAR encoder (None keeps depth)
# optical_tower: registry name of the frozen optical tower (the shipped stand-in), or None to train one here (lit_*)
optical_tower = "optical-text-standin"
lit_steps = 150         # step 1, when optical_tower is None: locked-text tuning of the optical encoder
lit_view_weight = 1.0   # weight of the image-image term of step 1 (0 gives plain LiT)
lit_colour = 0.1        # colour-jitter strength of the step-1 views
# lit_layout_captions: layout-caption paraphrases (class shares and where they lie) per training image in step 1
lit_layout_captions = 2 # 0 for none
lit_layout_repeat = 2   # each listed this often among the texts of its image (more weight, no extra encoding)
align_steps = 400       # step 3: SAR alignment with L_img
ablation_steps = 80      # step 5: steps of each of the three ablation runs (fewer than align_steps, to save time)
optical_bank = True     # L_CMA against the cached features of ALL training optical images (else the batch only)
sar_init_from_optical = False  # start E_SAR from a copy of the optical blocks (the paper does not say)
batch_size = 64         # step 1 batch
align_batch_size = 64   # step 3 batch (with optical_bank the negatives come from the bank, not the batch)
lit_crop = 48           # step 1: random crop size of the optical views (px)
crop = 32               # step 3: random crop size of the SAR views (px; with optical_bank only view b is cropped)
lr = 3e-3
temperature = 0.07      # InfoNCE temperature of L_CL and L_CMA
lambda_cl = 0.25
lambda_cma = 1.0
run_ablation = True     # step 5: train three more SAR encoders (L_CL + L_CMA, L_CMA only, L_CL only)
run_ceiling = False     # step 4: train the two ceiling students (label map, optical) too; about 40 s more on the CPU
real_tile = 64          # tile size for the real Sen1Floods11 chip
# num_threads: 2 on an idle 2-core CPU (118 s vs 142 s with 1); use 1 on a busy machine
num_threads = 2         # CPU threads for torch
# teacher: None, the optical tower trained here (steps 1-2); or a registry name, e.g. "clip-vit-b16-openai",
# for that frozen CLIP tower (full profile)
teacher = None
pair_dataset = "synthetic"   # "synthetic" | "sen12ms": co-registered Sentinel-1/2 pairs under data_root (full profile)
# eval_dataset: "synthetic" | "sen1floods11" (zero-shot water / not-water on its test chips, full profile)
eval_dataset = "synthetic"
n_eval_pairs = 256      # real pairs held out for SAR -> optical retrieval (the last ones of pair_dataset)
warmup_steps = 10       # linear warm-up of the alignment (full profile)
data_root = None        # the dataset folder of rslab.data.catalog (full profile)
weights_dir = None      # folder of the official weights; None: $RSLAB_WEIGHTS_DIR (rslab.weights)
device = "cpu"          # "cpu" | "auto" (a GPU when there is one) | "cuda"
num_workers = 0         # DataLoader workers reading real pairs from disk
""", tags=["parameters"])

code("""
%matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from rslab.data.augment import SARViewAugment
from rslab.data.pairs import balanced_scenes, pairs_to_tensors, restyled_scenes
from rslab.data.synthetic import SyntheticWorld, WorldConfig
from rslab.losses.contrastive import ImageAlignmentLoss
from rslab.metrics import retrieval_scores, zero_shot_accuracy
from rslab.models.alignment import embed_optical, embed_sar, save_encoder
from rslab.models.encoders import MiniLMTextEncoder, count_parameters
from rslab.notebooks import start_run
from rslab.recipes.alignment_study import SARAlignmentRuns, alignment_encoder_config, train_optical_tower
from rslab.train import TrainConfig
from rslab.viz import optical_to_display, pca_2d, sar_to_display
from rslab.viz.alignment import alignment_report, paper_alignment_report, sar_explorer

torch.set_num_threads(num_threads)
torch.manual_seed(seed)
run = start_run("01_sar_alignment", profile=profile, seed=seed)
cpu_start = time.process_time()  # CPU seconds of this kernel: an honest timing on a shared machine
metrics = {}
""")

md(r"""
## Full profile: the paper's setup

With `teacher` set (the full profile: `clip-vit-b16-openai`), this notebook runs stage 1 as the paper
does: a frozen pretrained optical–text tower (OpenAI CLIP ViT-B/16, QuickGELU) as $E_{opt}$, a SAR
encoder of the same size (ViT-B/16, 2-channel patch embedding) trained with $\mathcal{L}_{img}$ on
co-registered SEN12MS Sentinel-1/2 pairs streamed from `data_root`, SAR→optical retrieval on held-out
pairs and zero-shot water / not-water on Sen1Floods11's test chips. The synthetic-world tutorial
below is then skipped; the ci and smoke profiles skip this section instead.
""")

code("""
paper_setup = teacher is not None
if paper_setup:  # every missing weights file and dataset in one error, within seconds
    from rslab.data.catalog import open_dataset, require_inputs
    from rslab.notebooks import resolve_device

    if pair_dataset != "sen12ms" or eval_dataset != "sen1floods11":
        raise ValueError("the paper setup needs pair_dataset='sen12ms' and eval_dataset='sen1floods11', got "
                         f"{pair_dataset!r} and {eval_dataset!r}")
    torch_device = resolve_device(device, profile)
    found_weights, found_data = require_inputs([teacher], [pair_dataset, eval_dataset], weights_dir, data_root)
    print("weights:", found_weights, "\\ndatasets:", found_data, "\\ndevice:", torch_device)
elif pair_dataset != "synthetic" or eval_dataset != "synthetic":
    raise ValueError("real pair/eval datasets need a pretrained teacher (teacher='clip-vit-b16-openai'): "
                     "the stand-in tower of step 2 knows only the synthetic world")
""")

code("""
if paper_setup:
    import copy

    from rslab.recipes.alignment import (CLIPImageTower, PairWindows, SARViT, TeacherSARModel, clip_from_registry,
                                         train_teacher_sar_alignment)
    from rslab.recipes.alignment_study import evaluate_paper_alignment, time_alignment_step
    from rslab.recipes.budget import print_budget
    from rslab.weights import get_entry

    clip_model, clip_text = clip_from_registry(teacher, weights_dir, torch_device)
    clip_cfg = get_entry(teacher).config
    torch.manual_seed(seed + 1)
    sar_vit = SARViT(clip_cfg["model"], clip_cfg["quick_gelu"],
                     init_from=clip_model.visual if sar_init_from_optical else None).to(torch_device)
    unaligned_vit = copy.deepcopy(sar_vit).eval()  # the "before" encoder: same init, untrained
    paper_model = TeacherSARModel(CLIPImageTower(clip_model), sar_vit)

    pairs = open_dataset(pair_dataset, data_root, None)
    n_held = min(n_eval_pairs, len(pairs) // 2)
    train_ids = list(range(len(pairs) - n_held))[:n_align]
    train_pairs = PairWindows(pairs, image_size, train_ids)
    eval_pairs = PairWindows(pairs, image_size, range(len(pairs) - n_held, len(pairs)))
    print(f"E_opt: {teacher} (frozen), E_SAR: {count_parameters(sar_vit) / 1e6:.1f} M parameters; "
          f"{len(train_pairs)} training pairs, {len(eval_pairs)} held out ({image_size} px windows, crops of {crop})")
""")

code("""
if paper_setup:
    paper_augment = SARViewAugment(crop=crop, looks=(3.0, 12.0), speckle_window=3, max_offset_db=1.0)
    paper_loss = ImageAlignmentLoss(lambda_cl, lambda_cma, temperature)
    step_s = time_alignment_step(paper_model, train_pairs, paper_loss, paper_augment, align_batch_size, torch_device)
    plan = print_budget("SAR alignment (L_img)", align_steps, 3 * align_batch_size, step_s, torch_device)
    t0 = time.perf_counter()
    paper_history = train_teacher_sar_alignment(
        paper_model, train_pairs, paper_loss, batch_size=align_batch_size, augment=paper_augment,
        num_workers=num_workers,
        config=TrainConfig(max_steps=align_steps, lr=lr, warmup_steps=min(warmup_steps, align_steps), seed=seed,
                           log_every=max(1, align_steps // 50), progress=True, cpu=torch_device.type == "cpu",
                           out_dir=run.artifacts / "paper_alignment"),
    )
    metrics["align_s"] = time.perf_counter() - t0
    print(f"trained {align_steps} steps in {metrics['align_s']:.0f} s; final loss {paper_history[-1]['loss']:.3f}")
""")

code("""
if paper_setup:
    from safetensors.torch import save_file

    # Sen1Floods11 test chips, the centre real_tile window of each: water when over half its labelled pixels are
    floods = PairWindows(open_dataset(eval_dataset, data_root, "test"), real_tile)
    water_prompts = clip_text.prompt_embeddings([["land", "farmland", "forest", "urban area", "bare ground"],
                                                 ["water", "river", "lake", "flooded area"]])
    scores, n_chips, n_water = evaluate_paper_alignment(paper_model, unaligned_vit, eval_pairs, floods, water_prompts,
                                                        num_workers=num_workers)
    metrics.update(scores)
    for tag in ("before", "after"):
        print(f"SAR {tag:>6}: R@1 {scores[f'sar2opt_r1_{tag}']:.3f}, R@5 {scores[f'sar2opt_r5_{tag}']:.3f} "
              f"(chance {1 / len(eval_pairs):.3f}); water zero-shot accuracy {scores[f'sar_zeroshot_acc_{tag}']:.3f}, "
              f"balanced {scores[f'sar_zeroshot_balanced_acc_{tag}']:.3f} ({n_chips} chips, {n_water} water)")
    print(f"optical teacher: water zero-shot accuracy {scores['optical_zeroshot_acc']:.3f}, "
          f"balanced {scores['optical_zeroshot_balanced_acc']:.3f}")
    save_file({k: v.contiguous() for k, v in sar_vit.state_dict().items()},
              str(run.artifacts / "sar_encoder_vit.safetensors"))
    metrics["cpu_s"] = time.process_time() - cpu_start
    results_path = run.save_results(metrics, teacher=teacher, pair_dataset=pair_dataset, eval_dataset=eval_dataset,
                                    n_align_pairs=len(train_pairs), n_eval_pairs=len(eval_pairs),
                                    n_eval_chips=n_chips, budget=plan)
    print(f"saved to {run.artifacts}")
""")

md(r"""
## 1 · Data: co-registered optical/SAR pairs

Training pairs are synthetic scenes `0 .. n_align-1`; the first `n_train` of them also lend their
captions (written with *training* synonyms) to step 2, the only step that uses text.
Evaluation pairs are **held out**: scenes from index 100000 on, never trained on, picked so that
each of five dominant classes (the class covering most pixels, at tree level 2) has
`eval_per_class` scenes; their text uses the tree's **held-out synonyms**. Balanced classes make
the zero-shot chance level exactly 20 %.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    world = SyntheticWorld(WorldConfig(size=image_size), seed=seed)
    tree, LEVEL = world.tree, 2
    zs_classes = ["herbaceous vegetation", "bare soil", "road", "forest", "building"]

    train_samples = [world.scene(i) for i in range(max(n_train, n_align))]
    eval_samples, eval_y = balanced_scenes(world, zs_classes, eval_per_class, level=LEVEL, text_split="heldout")
    opt_train, sar_train = pairs_to_tensors(train_samples[:n_align])
    opt_eval, sar_eval = pairs_to_tensors(eval_samples)
    print(f"train pairs {tuple(opt_train.shape)} optical, {tuple(sar_train.shape)} SAR; "
          f"held-out pairs: {len(eval_samples)}")
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    fig, axes = plt.subplots(2, 5, figsize=(12, 5))
    for k, ax in enumerate(axes.T):
        s = eval_samples[k * eval_per_class]
        ax[0].imshow(optical_to_display(s.optical)); ax[1].imshow(sar_to_display(s.sar, "rgb"))
        ax[0].set_title(zs_classes[k], fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([]); ax.set_yticks([])
    axes[0, 0].set_ylabel("optical (RGB)"); axes[1, 0].set_ylabel("SAR (VV, VH, ratio)")
    fig.suptitle("The domain gap: the same five scenes seen by the two sensors"); plt.show()
""", tags=["figure"])

md(r"""
## 2 · The frozen optical encoder: a stand-in for CLIP

The paper's $E_{opt}$ is a pretrained CLIP image tower, frozen. Offline there is none, so this
profile loads a **stand-in** that the project pretrained once and ships with the package,
`optical-text-standin` (`rslab/standins/`, made by `rslab pretrain optical-text-standin`; its model
card is printed below). It was trained the way CLIP's image tower is tuned to a fixed text tower
(**locked-text tuning**, LiT): the text side is **all-MiniLM-L6-v2**, loaded offline and frozen
(`MiniLMTextEncoder`: mean pooling + L2 norm, 384-d), and the image tower (a conv tokenizer for
4-channel RGB+NIR input, timm transformer blocks, GAP, a linear projection into the 384-d text
space) learns with the CLIP loss to meet the embedding of one of its scene's texts: the caption,
prompts such as *"a satellite image of low vegetation."* built from the dominant class's *training*
synonyms, and **layout captions** that state the share of each class and where it lies (*"About 60
percent farmland, about 20 percent roadway and about 20 percent watercourse. Farmland in the
north-west, ..."*). Its corpus: scenes of eight synthetic worlds (other regional styles than this
notebook's) that no notebook uses.

Two additions make the stand-in behave more like a pretrained tower, and both are ours, not the
paper's: a pretrained CLIP tells *scenes* apart and a recoloured scene stays the same scene to it,
while captions alone teach a small encoder an embedding dominated by colour, which SAR cannot see.
So (1) an image-image InfoNCE term pulls each scene towards **the same ground rendered in another
regional style** (like a second acquisition from another season), with a small colour jitter, and
(2) the layout captions force the embedding to encode the layout, which SAR can see. Flips and
rotations are off (a flip would falsify "a river in the north-west").

`optical_tower=None` trains a small tower here instead, with the same recipe for `lit_steps` steps
(the ci profile does, in seconds). Either way it is frozen from here on and never changes again.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    sar_config = alignment_encoder_config(encoder, 2, image_size, embed_dim, depth, num_heads, sar_depth)  # E_SAR
    text_encoder = MiniLMTextEncoder()
    t0 = time.perf_counter()
    if optical_tower is not None:
        from rslab import weights as W

        optical_encoder = W.load(optical_tower, weights_dir)  # frozen from here on
        if optical_tower in W.STANDINS:
            print(W.standin_summary(optical_tower))
    else:  # locked-text tuning of a small tower (the same preset), here
        optical_encoder, lit_history = train_optical_tower(
            world, train_samples[:n_train], text_encoder, tree, LEVEL,
            alignment_encoder_config(encoder, 4, image_size, embed_dim, depth, num_heads),
            TrainConfig(max_steps=lit_steps, lr=lr, warmup_steps=min(10, lit_steps), seed=seed, log_every=25,
                        progress=False),
            layout_captions=lit_layout_captions, layout_repeat=lit_layout_repeat, batch_size=batch_size,
            crop=lit_crop, colour=lit_colour, view_weight=lit_view_weight, text_seed=seed,
        )
        print(f"locked-text tuning: final loss {lit_history[-1]['loss']:.3f}")
    metrics["lit_s"] = time.perf_counter() - t0
    print(f"optical encoder: {count_parameters(optical_encoder) / 1e6:.2f} M parameters, "
          f"ready in {metrics['lit_s']:.0f} s")
""")

md(r"""
Zero-shot classification: embed one prompt set per class (templates x synonyms, averaged, as CLIP
does) and give each image the class with the highest cosine similarity. We test with the
**training** synonyms and, separately, with the **held-out** synonyms only (names that never
appeared in any training text, e.g. *"non-woody vegetation"*, *"exposed ground"*,
*"roofed structure"*): the optical–text space generalises to them only through MiniLM's own
knowledge of language. This is the optical *teacher's* ability that SAR should inherit.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    class_emb = {
        "train synonyms": text_encoder.prompt_embeddings([tree.synonyms(c, "train") for c in zs_classes]),
        "held-out synonyms": text_encoder.prompt_embeddings([tree.synonyms(c, "heldout") for c in zs_classes]),
    }
    print({c: tree.synonyms(c, "heldout") for c in zs_classes})
    f_opt_eval = embed_optical(optical_encoder, opt_eval)
    for name, emb in class_emb.items():
        acc = zero_shot_accuracy(f_opt_eval, emb, eval_y)["acc"]
        metrics[f"optical_zeroshot_acc_{name.split()[0].replace('-', '')}"] = acc
        print(f"optical zero-shot accuracy, {name}: {acc:.3f}   (chance {1 / len(zs_classes):.3f})")
""")

md(r"""
How much does the frozen teacher's embedding say about the *ground* rather than its colours?
Re-render every held-out scene in another regional style (same layout, other colours) and
retrieve the original among all held-out optical images. SAR shares the ground but none of the
colours, so this number is a rough guide to what SAR → optical retrieval can reach with this
teacher.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    restyled_eval = restyled_scenes(world, eval_samples, offset=1)
    r = retrieval_scores(embed_optical(optical_encoder, pairs_to_tensors(restyled_eval)[0]), f_opt_eval, ks=(1, 5))
    metrics["optical_restyled_r1"], metrics["optical_restyled_r5"] = r[1], r[5]
    print(f"optical (other style) -> optical: R@1 {r[1]:.3f}, R@5 {r[5]:.3f} (chance {1 / len(eval_samples):.3f})")
""")

md(r"""
## 3 · SAR alignment: train $E_{SAR}$ only, with $\mathcal{L}_{img}$

`SARAlignmentModel` holds the frozen optical encoder and a new SAR encoder of the same width
(`sar_depth` blocks) with its **own tokenizer** (a conv stem on 2 channels, VV and VH). SAR enters the network once
normalised: clipped to (-30, 5) dB and mapped to [-1, 1] (`rslab.data.sar`, the one place this
is defined); **NaN (nodata) pixels are masked out of the average pooling**, and pairs that are
mostly nodata are dropped before training.

Augmentations (`SARViewAugment`): both SAR views get **fresh speckle** (the local mean in linear
power times new Gamma speckle of 3-12 looks) and a **dB offset** of up to ±1 dB (calibration
differences); view *b* also gets its own random crop and flip/rotation.

**The optical bank (`optical_bank`, our choice of negatives for $\mathcal{L}_{CMA}$).** Because
$E_{opt}$ is frozen, the optical feature of every training image never changes: we compute all of
them **once** before training, and $\mathcal{L}_{CMA}$ asks each SAR view *a* to pick out its own
optical feature among **all** training images (a full-softmax InfoNCE over the bank, plus the
usual optical→SAR direction over the batch) instead of among the batch only. It is the same loss
with many more negatives and no optical forward pass per step (as MoCo's queue, but never stale).
View *a* is then the whole SAR image (radiometric augmentation only) so that it stays
co-registered with its cached optical feature; with `optical_bank = False` view *a* instead shares
a random crop and flip with the optical image, which is encoded every step. The paper does not
say where its negatives come from.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    augment = SARViewAugment(crop=crop, looks=(3.0, 12.0), speckle_window=3, max_offset_db=1.0)
    runs = SARAlignmentRuns(  # every run (headline, ablation) starts from the same E_SAR, drawn with seed + 1
        optical_encoder, sar_config, opt_train, sar_train, augment, lr=lr, temperature=temperature, seed=seed,
        init_seed=seed + 1, batch_size=align_batch_size, optical_bank=optical_bank,
        init_from_optical=sar_init_from_optical,
    )
    unaligned_sar = runs.initial_encoder()  # the "before" encoder: same init, untrained
    t0 = time.perf_counter()
    model, history = runs.train(lambda_cl, lambda_cma, align_steps)
    metrics["align_s"] = time.perf_counter() - t0
    sar_encoder = model.sar
    print(f"SAR encoder: {count_parameters(sar_encoder) / 1e6:.2f} M parameters, trained in {metrics['align_s']:.0f} s")
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    for key, label in [("loss_cl", "$L_{CL}$ (SAR view a vs view b)"),
                       ("loss_cma", "$L_{CMA}$ (SAR vs frozen optical)")]:
        if key in history[-1]:
            ax.plot(steps, [h[key] for h in history], marker="o", label=label)
    ax.axhline(np.log(len(opt_train) if optical_bank else align_batch_size), color="grey", ls=":",
               label="chance level of $L_{CMA}$ (log of its candidates)")
    ax.set_xlabel("step"); ax.set_ylabel("InfoNCE loss"); ax.legend(); ax.set_title("Training losses of $L_{img}$")
    plt.show()
""", tags=["figure"])

md(r"""
Bad input is refused or masked, never silently trained on: a shape or channel mismatch raises a
`ValueError` that says what to fix, and SAR nodata (NaN, as in real Sentinel-1 products) is
masked out of the pooling; a tile that is mostly nodata is dropped by `check_pairs`.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    from rslab.data.pairs import check_pairs

    for what, optical_bad, sar_bad in [
        ("SAR smaller than optical", opt_train[:2], sar_train[:2, :, :32, :32]),
        ("3-channel 'SAR'", opt_train[:2], torch.cat([sar_train[:2], sar_train[:2, :1]], dim=1)),
    ]:
        try:
            check_pairs(optical_bad, sar_bad)
        except ValueError as err:
            print(f"{what}: ValueError: {err}")
    holey = sar_train[:3].clone()
    holey[1] = float("nan")            # all nodata -> dropped
    holey[2, :, :16] = float("nan")    # a quarter nodata -> kept, masked in the pooling
    print("kept pairs:", check_pairs(opt_train[:3], holey).tolist(),
          "| embeddings finite:", bool(torch.isfinite(embed_sar(sar_encoder, holey[[0, 2]])).all()))
""")

md(r"""
## 4 · What SAR inherited

Both questions below are asked on **held-out pairs** and compared with the same SAR encoder
*before* alignment (its random initialisation):

- **SAR → optical retrieval**: for each SAR image, rank all held-out optical images by cosine
  similarity of their embeddings; R@K = fraction whose true partner is in the top K
  (chance R@1 = 1 / number of pairs).
- **Zero-shot SAR classification with text**: the SAR embedding is compared with the class-prompt
  embeddings of MiniLM. The SAR encoder never saw any text: whatever it gets right, it inherited.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    f_sar_before = embed_sar(unaligned_sar, sar_eval)
    f_sar_after = embed_sar(sar_encoder, sar_eval)
    n_eval = len(eval_samples)
    rows = []
    for tag, f_sar in [("before", f_sar_before), ("after", f_sar_after)]:
        r = retrieval_scores(f_sar, f_opt_eval, ks=(1, 5))
        zs = {name: zero_shot_accuracy(f_sar, emb, eval_y)["acc"] for name, emb in class_emb.items()}
        metrics[f"sar2opt_r1_{tag}"], metrics[f"sar2opt_r5_{tag}"] = r[1], r[5]
        metrics[f"sar_zeroshot_acc_{tag}"] = zs["train synonyms"]
        metrics[f"sar_zeroshot_acc_heldout_synonyms_{tag}"] = zs["held-out synonyms"]
        rows.append((tag, r[1], r[5], zs["train synonyms"], zs["held-out synonyms"]))
    print(f"{'SAR encoder':<12}{'R@1':>8}{'R@5':>8}{'zero-shot':>11}{'zero-shot (held-out names)':>28}")
    for tag, r1, r5, z1, z2 in rows:
        print(f"{tag:<12}{r1:>8.3f}{r5:>8.3f}{z1:>11.3f}{z2:>28.3f}")
    print(f"chance: R@1 {1 / n_eval:.3f}, R@5 {5 / n_eval:.3f}, zero-shot {1 / len(zs_classes):.3f}  "
          f"({n_eval} held-out pairs)")
""")

md(r"""
### This run's numbers
""")

code("""
if paper_setup:  # the full profile's numbers (SEN12MS retrieval, Sen1Floods11 water zero-shot)
    run_report = paper_alignment_report(metrics, len(eval_pairs), pair_dataset, n_chips, eval_dataset)
else:
    run_report = alignment_report(metrics, n_eval, len(zs_classes))
run_report
""", tags=["report"])

md(r"""
**What it shows.** Zero-shot accuracy is the clearest test of inheritance: the SAR encoder was
never shown a word, so every point it gains over chance with text prompts it took from the
optical–text space. The closer its accuracy comes to the optical teacher's (both in the report
above), held-out class names included, the more it inherited.

**What it does not show.** Why retrieval stops where it does. When R@1 stays well below R@5, as
it does on the short profiles, two explanations compete: the SAR encoder learns too slowly, or
the teacher's embedding holds something SAR cannot see. A *ceiling measurement* separates them:
train students with the same $\mathcal{L}_{CMA}$ against the same frozen bank, but give them the
exact label map (all the layout a SAR sensor could ever reveal) or the optical image itself. If the
label-map student is not much better than SAR while the optical student is, the limit is the
teacher, not SAR. With `run_ceiling = True` the next cell runs it on this notebook's pairs (two
more students, each trained as long as the SAR encoder); the book's *lab notes* appendix records
the development measurements (teacher variants, objectives, batch sizes, temperatures) with the
commands that reproduce them.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    if run_ceiling:
        from rslab.recipes.alignment_study import train_ceiling_students

        ceiling = train_ceiling_students(  # students of the SAR encoder's size, from its initial seed
            optical_encoder, opt_train, opt_eval, np.stack([s.labels for s in train_samples[:n_align]]),
            np.stack([s.labels for s in eval_samples]), tree.num_classes(), sar_config,
            TrainConfig(max_steps=align_steps, lr=lr, warmup_steps=min(10, align_steps), seed=seed, log_every=25,
                        progress=False),
            batch_size=align_batch_size, temperature=temperature, init_seed=seed + 1,
        )
        for name, r in ceiling.items():
            metrics[f"ceiling_{name.replace(' ', '_')}_r1"] = r[1]
            print(f"student given the {name:<10}: R@1 {r[1]:.3f}, R@5 {r[5]:.3f} "
                  f"({align_steps} steps; SAR: {metrics['sar2opt_r1_after']:.3f})")
    else:
        print("run_ceiling = False: the ceiling students were not trained in this run (set run_ceiling = True).")
""")


md(r"""
## 5 · Ablation: which term does what?

Same initial SAR encoder, same steps, three objectives: $\mathcal{L}_{CL} + \mathcal{L}_{CMA}$
(the paper's, with the weights above), $\mathcal{L}_{CMA}$ only, and $\mathcal{L}_{CL}$ only.
To fit the time budget the three runs are **shorter** than the headline run of step 3
(`ablation_steps`, printed below), so their numbers compare with each other, not with step 4. Expected:
$\mathcal{L}_{CL}$ alone learns *some* SAR features but in its own space, unrelated to the optical–text
space, so it should retrieve and classify no better than chance; the cross-modal term is what moves
SAR into the optical–text space.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    ablation = {}
    if run_ablation:
        t0 = time.perf_counter()
        for name, (lam_cl, lam_cma) in {"L_CL + L_CMA": (lambda_cl, lambda_cma), "L_CMA only": (0.0, lambda_cma),
                                        "L_CL only": (1.0, 0.0)}.items():
            ablation[name] = embed_sar(runs.train(lam_cl, lam_cma, ablation_steps)[0].sar, sar_eval)
        metrics["ablation_s"] = time.perf_counter() - t0
    print(f"{ablation_steps} steps each (the headline run above had {align_steps})")
    print(f"{'objective':<16}{'R@1':>8}{'R@5':>8}{'zero-shot':>11}")
    for name, f_sar in ablation.items():
        r = retrieval_scores(f_sar, f_opt_eval, ks=(1, 5))
        acc = zero_shot_accuracy(f_sar, class_emb["train synonyms"], eval_y)["acc"]
        key = name.lower().replace(" + ", "_").replace(" ", "_")
        metrics[f"ablation_{key}_r1"], metrics[f"ablation_{key}_zeroshot_acc"] = r[1], acc
        print(f"{name:<16}{r[1]:>8.3f}{r[5]:>8.3f}{acc:>11.3f}")
""")

md(r"""
## 6 · The embedding space, before and after

One 2-D PCA fitted on the three image sets together (optical, SAR before, SAR after), so positions
are comparable across panels; colour = dominant class. Before alignment the SAR embeddings sit in
a clump of their own, away from the optical ones; after, they should spread over the optical
points, grouped by class like them.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    p_opt, p_before, p_after = pca_2d(f_opt_eval, f_sar_before, f_sar_after)
    colors = plt.cm.tab10(eval_y.numpy())
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    for ax, p_sar, title in [(axes[0], p_before, "before alignment"), (axes[1], p_after, "after alignment")]:
        ax.scatter(*p_opt.T, c=colors, marker="o", s=22, alpha=0.5, label="optical")
        ax.scatter(*p_sar.T, c=colors, marker="x", s=22, label="SAR")
        ax.set_title(f"SAR {title}"); ax.set_xlabel("PC 1")
    axes[0].set_ylabel("PC 2"); axes[0].legend(loc="best", fontsize=8)
    fig.suptitle("Colour = dominant class: " + ", ".join(f"{i}: {c}" for i, c in enumerate(zs_classes)), fontsize=9)
    plt.show()
""", tags=["figure"])

md(r"""
## 7 · A real chip: Sen1Floods11 (Spain, Sentinel-1 + Sentinel-2)

When the real samples are on this machine (`../shared/real_samples`), the 512 x 512 chip is cut
into tiles and we ask the same two questions of encoders trained **only on synthetic data**:
SAR → optical tile retrieval, and water / not-water zero-shot classification (a tile is *water*
when most of its labelled pixels are water; the prediction is *water* when the "water" prompt wins
over the other four level-1 classes). The optical input is Sentinel-2 bands B4, B3, B2, B8
(RGB + NIR) stretched per band between their 2nd and 98th percentiles so their range resembles
the synthetic [0, 1] reflectance. Expect a large gap: 10 m pixels instead of 1 m, real speckle and
terrain, a world the synthetic encoders never saw. The numbers are reported as they come.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    from rslab.data.readers import find_sen1floods11_chip, read_sen1floods11, real_samples_dir
    from rslab.recipes.alignment_study import real_chip_scores

    real = None
    root = real_samples_dir()
    if root is None or not (root / "sen1floods11").is_dir():
        print("Real samples not found (../shared/real_samples/sen1floods11): skipping the real-data check.")
    else:
        level1 = tree.names(1)  # water / not water: the "water" prompt against the other level-1 classes
        real = real_chip_scores(
            read_sen1floods11(**find_sen1floods11_chip(root / "sen1floods11")), real_tile, optical_encoder,
            {"before": unaligned_sar, "after": sar_encoder},
            text_encoder.prompt_embeddings([tree.synonyms(c, "train") for c in level1]), level1.index("water"),
        )
        for tag, sc in real["sar"].items():
            metrics[f"real_sar2opt_r1_{tag}"], metrics[f"real_water_balanced_acc_{tag}"] = sc["r1"], sc["balanced_acc"]
            print(f"SAR {tag:>6}: tile R@1 {sc['r1']:.3f} R@5 {sc['r5']:.3f} (chance {1 / real['n_tiles']:.3f}); "
                  f"water/not-water accuracy {sc['acc']:.3f}, balanced {sc['balanced_acc']:.3f}")
        print(f"optical teacher: water/not-water balanced accuracy {real['optical_balanced_acc']:.3f}; "
              f"{real['n_water']} of {real['n_tiles']} tiles are water")
""")

md(r"""
## 8 · Explorer: a SAR tile, its nearest optical tiles and its text scores

The static figure shows the first held-out pair; the slider (in a live notebook) picks any other.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    # the first held-out pair (the static figure); a slider over all of them at a live kernel
    explorer = sar_explorer(sar_eval, opt_eval, f_sar_after, f_opt_eval, class_emb["train synonyms"], zs_classes,
                            eval_y)
""", tags=["figure"])

md(r"""
## 9 · Save the aligned encoders and the results

Later notebooks load them with `rslab.models.alignment.load_encoder` (safetensors weights + a
JSON config per encoder) from `artifacts/01_sar_alignment/`.
""")

code("""
if not paper_setup:  # the synthetic-world tutorial (the full profile ran the paper's setup above)
    metrics["cpu_s"] = time.process_time() - cpu_start
    save_encoder(optical_encoder, run.artifacts / "optical_encoder")
    save_encoder(sar_encoder, run.artifacts / "sar_encoder")
    results_path = run.save_results(metrics, n_eval_pairs=n_eval, n_text_pairs=n_train, n_align_pairs=n_align)
    print(f"saved to {run.artifacts}")
    print({k: round(v, 3) for k, v in metrics.items()})
""")

nb.over_seeds()

md(r"""
## Summary

- The optical–SAR gap is large: an untrained SAR encoder retrieves and classifies at chance
  (the "before" row of step 4).
- Freezing an optical encoder that lives in an optical–text space and training only the SAR
  encoder with $\mathcal{L}_{img} = \lambda_{CL}\mathcal{L}_{CL} + \lambda_{CMA}\mathcal{L}_{CMA}$
  is meant to move SAR into that space; step 4 measures how far it got: SAR → optical retrieval,
  and classification by text prompts, including names neither encoder saw in training.
- $\mathcal{L}_{CMA}$ is the term that can do the moving; $\mathcal{L}_{CL}$ alone has no reason
  to leave a space of its own (step 5 tests both).
- Here the optical–text space is a stand-in for the paper's pretrained CLIP, pretrained once by the
  project (`rslab pretrain optical-text-standin`, locked-text tuning against frozen MiniLM) and
  shipped with the package. SAR can inherit only what the teacher's embedding says
  about structure SAR sees: zero-shot classification needs only coarse content; telling one scene
  from another also needs optical appearance, which is why retrieval is the harder of the two.

## Exercises

1. Set `run_ceiling = True` and compare the three students' R@1. Which one is the SAR encoder
   closest to, and what does that say about where the limit lies?
2. Change `temperature` (0.03 and 0.15) and rerun step 3: does R@1 move by more than it moves
   between seeds? (Run the default with two values of `seed` first to measure that spread.)
3. Set `lambda_cl = 0` (only $\mathcal{L}_{CMA}$) for the headline run: how do retrieval and the
   PCA picture of step 6 change?
4. Set `optical_tower = None` and `lit_steps = 150` to train a small tower inside the notebook
   (a minute) instead of loading the shipped stand-in: how do the teacher's own zero-shot and
   restyled retrieval, and then SAR's R@1, change?
5. In the explorer (live kernel), find a SAR tile whose nearest optical tile is wrong: what do the
   two scenes share, and what differs only in colour?

Next: **02 · QSACL pre-training** of a shared optical/SAR backbone.
""")


if __name__ == "__main__":
    nb.write()
