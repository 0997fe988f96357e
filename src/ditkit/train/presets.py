"""Named training recipes: `ditkit train --preset NAME` (model preset of the same name + TrainConfig).

shapes-small — the bundled class-conditional model (assets/shapes-dit). Pixel-space flow
matching on 32x32 shapes: patch 4 (64 tokens), D=192, depth 8, 3 heads (3.7 M parameters),
2D RoPE on top of the absolute positions (relative positions suit shapes placed anywhere) and
QK-norm (stable at a high learning rate; both LightningDiT switches), logit-normal timestep
sampling (SD3 §3.1: concentrates training on mid noise levels, where class and layout are
decided), AdamW lr 1e-3 with 300 warm-up steps then constant (any stopping point is usable;
the EMA does the annealing), global
batch 64, grad-clip 1.0, EMA 0.999 with warm-up (a horizon of ~1k steps suits a run of a few
thousand steps; the reference's 0.9999 would still be mostly the initialisation), 10 % label
drop for classifier-free guidance.

shapes-latent — the same recipe as latent diffusion (Rombach et al. 2022): the DiT (preset
shapes-latent: D=192, depth 8, 3 heads, RoPE + QK-norm, patch 1 on the 8x8x4 latent, 64 tokens)
models the normalised latents of the frozen bundled autoencoder (assets/shapes-ae, f=4, C=4),
whose decoder renders the shapes; each batch is encoded on the fly (~0.05 s per 64 images).

shapes-t2i — text to image on the same latents: the PixArt-α-style cross-attention DiT (preset
shapes-t2i: the shapes-latent trunk + adaLN-single + cross-attention, 5.1 M parameters) and
ditkit's word encoder (128-dim, 2 layers, 0.4 M parameters, trained with it) on the dataset's
captions ("a small red triangle on a green background"), 10 % of captions dropped to "" for
guidance. ``--init-from`` a shapes-latent model folder starts the image trunk from it (PixArt-α
§2.3 starts from a class-conditional DiT the same way).

shapes-t2v — text to video: 8-frame clips of moving shapes on the same latents (`ditkit.train.video`),
the video DiT with frame embedding and cross-attention to ditkit's word encoder; ``--init-from`` a
class-conditional image model folder or a video model folder.

shapes-t2v-motion — the direction-of-travel stage, run ``--init-from`` a shapes-t2v model folder:
training times shifted toward high noise (``train_shift`` 3, the SD3 shift: at mid noise the
direction can be read off the noisy clip itself, so only high-noise steps teach the caption's
direction word; logit-normal with shift 1 puts ~4 % of its samples above s = 0.85, shift 3 ~26 %)
and the four directional motions drawn twice as often as the others.

shapes-t2v-stage5 — shapes-t2v-motion for 3,000 more steps from the stage-4 model, with the clean
context prefix fed re-noised (below): the bundled assets/shapes-t2v until session 30 (commit ae8ff1a).

shapes-t2v-one — the whole text-to-video recipe in one command (``--init-from`` defaults to the
bundled text-to-image model assets/shapes-t2i, whose caption words, cross-attention and adaLN-single
carry over exactly: `ditkit.models.video_init.init_from_text_image`): the shapes-t2v-motion settings from the first step, and the
clean context prefix fed re-noised to a level from U(0, 0.2) (``VideoTrainConfig.context_noise``),
so rollouts can re-noise their context (``--context-noise``) as in training; attention starts
frame-local and opens across frames over the first 1,000 steps (``frame_local_steps``), and lr 1e-3
over 3,000 steps (the best of the session-14 H100 sweep, `scripts/t2v_sweep.py`, at that step count).

shapes-t2v-pt2 — shapes-t2v-one with two frames per token (temporal patch 2, the patch embedding
inflated from the image model's, I3D-style) for 10,000 steps: half the tokens, so more than three times
the steps of shapes-t2v-one in under 4 hours of a 2-core CPU. Image-to-video keeps working at one given frame by
frame replacement inside the first patch (`ditkit.diffusion.forcing.block_times`).

shapes-t2v-pt2-repa — shapes-t2v-pt2 with REPA per frame (each clean frame's shapes-encoder features
aligned with block 3's tokens of that frame, averaged over the temporal patch, as the bundled image
model was trained) for 9,000 steps. Session 21: shapes-t2v-pt2 met direction (72.7 %) and image-to-video
(35.8 dB) but drew the shape in 61.5 % of frames, and lost it over the clip even from a given first frame
(82.8 % at frame 0 to 67 % at frame 7): a per-frame fidelity gap, which REPA targets.

shapes-t2v-pt2-haste — shapes-t2v-pt2 (10,000 steps) with the same per-frame REPA for its first 2,000 steps
only (``RepaConfig.until``, HASTE's early termination): shapes-t2v-pt2-repa drew the shape better but had not
begun to learn the direction word by step 6,000.

shapes-t2v-pt2-sized — shapes-t2v-pt2 for 5,500 steps with captions in the ``"sized"`` style ("a small red
circle moving left on a blue background"). shapes-t2v-pt2 missed the shape bar already at frame 0 of text-to-video (62.5 %,
where image-to-video from the true frame 0 keeps 82.8 %): the start, the bundled text-to-image model, keys
on the size word, and draws the caption's shape 78.1 % of the time from sized captions against 18.8 % from
the default ones. In session 17's H100 sweep (the same call, about 2,300 steps of shapes-t2v-one) sized
captions drew the shape in 62.3 % of frames against 52.9 % (docs/results/video/gpu_sweep_caption_styles.json).

shapes-t2v-pt2-motion-9k — shapes-t2v-pt2-sized with the motion-weighted loss, 9,000 steps: the bundled
assets/shapes-t2v (one command, 203.7 min of training on a 2-core CPU; README, Status).
"""

from __future__ import annotations

import dataclasses

from ..config import get_preset
from ..data.moving_shapes import DIRECTIONS, MOTIONS
from ..diffusion.flow import FlowConfig
from ..models.text_encoder import WordEncoderConfig
from .repa import RepaConfig
from .trainer import TrainConfig
from .video import VideoTrainConfig

TRAIN_PRESETS: dict[str, TrainConfig] = {
    "shapes-tiny": TrainConfig(
        model=get_preset("shapes-tiny"), steps=200, batch_size=32, lr=1e-3, warmup_steps=20,
        log_every=10, ckpt_every=100, ema_decay=0.99,
    ),
    "shapes-small": TrainConfig(
        model=get_preset("shapes-small"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=12_000, batch_size=64, lr=1e-3, warmup_steps=300, log_every=25, ckpt_every=250,
        snapshot_every=500, ema_decay=0.999,
    ),
    "shapes-latent": TrainConfig(
        model=get_preset("shapes-latent"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=12_000, batch_size=64, lr=1e-3, warmup_steps=300, log_every=25, ckpt_every=250,
        snapshot_every=500, ema_decay=0.999, autoencoder="assets/shapes-ae",
    ),
    "shapes-repa": TrainConfig(
        model=get_preset("shapes-latent-mix"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=10_000, batch_size=64, lr=1e-3, warmup_steps=300, lr_schedule="cosine", log_every=25,
        ckpt_every=250, snapshot_every=500, ema_decay=0.999, autoencoder="assets/shapes-ae", repa=RepaConfig(),
    ),
    # the bundled image recipe at half the depth, trained from scratch: the capacity control for depth
    # pruning 8 -> 4 (`ditkit prune --keep 4`); REPA aligns block 2 of 4 (3 of 8 in the full model).
    # Measured (session 19): 88.3 % class accuracy after 10,000 steps (77 min), below the 20-minute pruned student
    "shapes-repa-d4": TrainConfig(
        model=get_preset("shapes-latent-mix").replace(depth=4), flow=FlowConfig(time_sampling="logit_normal"),
        steps=10_000, batch_size=64, lr=1e-3, warmup_steps=300, lr_schedule="cosine", log_every=25,
        ckpt_every=250, snapshot_every=500, ema_decay=0.999, autoencoder="assets/shapes-ae", repa=RepaConfig(depth=2),
    ),
    "shapes-t2i": TrainConfig(
        model=get_preset("shapes-t2i"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=4_000, batch_size=64, lr=5e-4, warmup_steps=200, lr_schedule="cosine", log_every=25,
        ckpt_every=250, snapshot_every=500, ema_decay=0.999, autoencoder="assets/shapes-ae",
        text_encoder=WordEncoderConfig(dim=128, depth=2, num_heads=2, max_length=16),
    ),
    "shapes-t2v": TrainConfig(
        model=get_preset("shapes-latent-mix"), flow=FlowConfig(time_sampling="logit_normal"),
        steps=4_500, batch_size=16, lr=5e-4, warmup_steps=200, lr_schedule="cosine", log_every=25,
        ckpt_every=100, snapshot_every=500, ema_decay=0.999, autoencoder="assets/shapes-ae",
        text_encoder=WordEncoderConfig(dim=128, depth=2, num_heads=2, max_length=16),
        video=VideoTrainConfig(frame_embed=True, cross_attention=True),
    ),
}
_T2V = TRAIN_PRESETS["shapes-t2v"]
TRAIN_PRESETS["shapes-t2v-motion"] = dataclasses.replace(  # the same model, so it warm-starts from shapes-t2v
    _T2V, flow=dataclasses.replace(_T2V.flow, train_shift=3.0), steps=3_000, lr=3e-4, warmup_steps=50,
    video=dataclasses.replace(_T2V.video, motions=(*DIRECTIONS, *MOTIONS)),
)

# Stage 5: the stage-4 model (``--init-from`` its folder) for 3,000 more steps of the same recipe, with
# the rollout context re-noised in training.
TRAIN_PRESETS["shapes-t2v-stage5"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-motion"], steps=3_000,
    video=dataclasses.replace(TRAIN_PRESETS["shapes-t2v-motion"].video, context_noise=0.2),
)

# One command from the bundled text-to-image model (images are one-frame videos): the shapes-t2v model
# with shift 3 and weighted directions from the start, and rollout context re-noised in training.
TRAIN_PRESETS["shapes-t2v-one"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-motion"], steps=3_000, lr=1e-3, warmup_steps=200, init_from="assets/shapes-t2i",
    video=dataclasses.replace(TRAIN_PRESETS["shapes-t2v-motion"].video, context_noise=0.2, frame_local_steps=1_000),
)

# The one-command recipe with two frames per token (4 x 8 x 8 = 256 tokens per 8-frame clip instead of 512):
# about 2.4x the clips per CPU-second (1.01 vs 2.45 s/step, session 19; 1.1-1.4 s/step in session 20's run), so
# 10,000 steps fit the 4-hour budget with a margin. Image-to-video replaces the first frame inside its patch.
# Run again from step 0 in session 26 (run folder /work/runs/t2v-pt2) for factorized sampling
# (`--first-frame-model`); session 20's run had started with steps=12,000, changed to 10,000 at step 1,600.
TRAIN_PRESETS["shapes-t2v-pt2"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-one"], steps=10_000,
    video=dataclasses.replace(TRAIN_PRESETS["shapes-t2v-one"].video, temporal_patch=2),
)

# REPA costs about 8 % per step here (1.27 vs 1.17 s/step, `benchmarks/train_step_time.py --repa 3`, session 21),
# so 9,000 steps keep the 4-hour budget's margin at session 20's 1.2 s/step average.
TRAIN_PRESETS["shapes-t2v-pt2-repa"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-pt2"], steps=9_000, repa=RepaConfig(depth=3),
)

# HASTE-style early-stopped REPA: the REPA run above drew the shape better (67.2 % at step 6,000 against
# shapes-t2v-pt2's 58.6 % at 6,800) but had not started to learn the direction word by then (20.5 %, no loss
# advantage), where shapes-t2v-pt2 learnt it between steps 4,000 and 6,800. So align for the first 2,000 steps
# only, then train as shapes-t2v-pt2 for the rest of its 10,000 steps (REPA adds ~8 % on those 2,000 steps).
TRAIN_PRESETS["shapes-t2v-pt2-haste"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-pt2"], repa=RepaConfig(depth=3, until=2_000),
)

# Captions that keep the text-to-image model's size word (the model folder records the style; `ditkit eval`
# and `ditkit generate` read it).
# 5,500 steps (2.3 hours at session 24's 1.5 s/step) so that the whole schedule, cosine decay included, fits
# one sitting with its evaluation.
TRAIN_PRESETS["shapes-t2v-pt2-sized"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-pt2"], steps=5_500,
    video=dataclasses.replace(TRAIN_PRESETS["shapes-t2v-pt2"].video, caption_style="sized"),
)

# More clean-prefix clips: a clip whose first frames are given and whose later frames are noisy can only be
# denoised well with the caption's direction word (where the shape goes next), while at one shared noise level
# the direction is read off the noisy clip itself at mid noise and barely matters at high noise (README, stage 4).
# shapes-t2v-pt2-sized, at context_prob 0.3, learnt no direction word for text-to-video (20.5 %) but followed it
# in 52.3 % of image-to-video clips; the session-14 sweep's lower context/per-frame probabilities (0.15) drew
# the shape better and the direction worse (62.5 / 27.3 % against 56.1 / 50.0 %).
# Measured (session 25, 123.7 min): shape 54.1 %, direction 15.9 %, image-to-video direction 47.7 %: worse than
# shapes-t2v-pt2-sized on all three (docs/results/video/pt2_ctx_run.json).
TRAIN_PRESETS["shapes-t2v-pt2-ctx"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-pt2-sized"],
    video=dataclasses.replace(TRAIN_PRESETS["shapes-t2v-pt2-sized"].video, context_prob=0.5),
)

# The loss weighted toward what changes over the clip (`diffusion.forcing.motion_weights`, strength 2: on the
# latents of 32 held-out clips the 10 % of positions that change most carry 36 % of the weight, against 10 %
# unweighted). The direction of travel is a small shape's displacement, a sliver of the plain MSE: with the
# first two frames given, shapes-t2v-pt2-sized's loss on the other six is only 5.3 % lower with the true
# direction word than with a wrong one at s = 0.95 (`benchmarks/video_direction_probe.py --context 2`).
# Started at the end of session 25 (run folder /work/runs/t2v-pt2-motion, outside the repository), stopped in
# session 26 at step 525 for a second shapes-t2v-pt2 run (which did not learn the direction word: 36.4 % at step
# 10,000, docs/results/video/pt2_rerun_s27_step10000.json), resumed in sessions 27-28 with the same command. Direction-
# word probe at s = 0.8 (plain loss, true word against wrong): 27.1 % advantage at step 2,000, against 10.7 %
# for that shapes-t2v-pt2 run at step 10,000.
TRAIN_PRESETS["shapes-t2v-pt2-motion"] = dataclasses.replace(
    TRAIN_PRESETS["shapes-t2v-pt2-sized"],
    video=dataclasses.replace(TRAIN_PRESETS["shapes-t2v-pt2-sized"].video, motion_weight=2.0),
)


# Measured at step 5,500 (sessions 25-28, 138.4 min of training; docs/results/video/pt2_motion_run.json): the
# direction word is learnt (direction-word probe at s = 0.8: 38.4 % advantage; image-to-video follows the caption's
# direction in 79.5 % of clips) but the shape is not (plain text-to-video 52.5 % / 52.3 %; factorized with
# assets/shapes-t2i as first-frame model 69.3 % / 54.5 %). So the same recipe for longer: 9,000 steps at the
# 1.26 s/step measured with the CPU free (session 28) are 189 min, inside the 4-hour budget with a margin for
# resumed sittings. Finished in session 29: 12,219 s (203.7 min) of training in two sittings. Its export is the
# bundled assets/shapes-t2v since session 30 (factorized with first-frame redraws: shape 79.9 %, direction 100 %;
# docs/results/video/pt2_motion_9k_run.json).
TRAIN_PRESETS["shapes-t2v-pt2-motion-9k"] = dataclasses.replace(TRAIN_PRESETS["shapes-t2v-pt2-motion"], steps=9_000)


def get_train_preset(name: str) -> TrainConfig:
    try:
        return TRAIN_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown training preset {name!r}; choose one of {', '.join(TRAIN_PRESETS)}") from None
