"""Noise processes and samplers.

Conventions, written down once
------------------------------
* **Network time.** Every model callable receives ``t`` as a float tensor of shape (N,) in
  *network time*: a number in [0, 1000] where larger means noisier.
  - Gaussian diffusion (DiT/ADM): ``t`` is the original integer step index 0..999
    (999 = pure noise). With respacing the model still receives the original index,
    never a rescaled one (reference ``_WrappedModel``).
  - Flow matching: the process time ``s`` lies in [0, 1] with **s = 0 data and s = 1 noise**
    (SD3 / REPA convention: ``x_s = (1 - s) x0 + s eps``, velocity ``v = eps - x0``).
    The network sees ``t = time_scale * s`` (``time_scale = 1000`` by default). SiT
    checkpoints (t = 0 noise, no scaling) are served by ``FlowMatching(sit_time=True)``.
  Wrappers (guidance intervals, caches) therefore see one unit for both processes.
* **Model output.** Gaussian: ε (first C channels) and optionally the learned-range
  variance interpolation v (next C channels). Flow: velocity (first C channels; a learned
  sigma half, as in SiT checkpoints, is ignored).
* **CFG.** ``uncond + s * (cond - uncond)`` over all channels by default; the reference DiT
  3-channel variant is the named flag ``cfg_channels=3`` (see ``guidance.py``).
* **Latent scale.** Lives with the autoencoder, never in a sampler.
"""
