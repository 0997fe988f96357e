"""Training-free acceleration of DiT sampling: caching, forecasting, region-adaptive sampling.

Every method is opt-in, configured by a frozen dataclass, and applied by wrapping the model —
the model's code is not touched, and the result works with every sampler and with guidance:

    from ditkit import accel
    fast = accel.accelerate(model, accel.FORAConfig(interval=3))        # one cache policy ...
    fast = accel.accelerate(model, accel.TaylorSeerConfig(interval=4, order=2),
                            accel.RASConfig(sample_ratio=0.5))            # ... plus RAS, optionally
    images = ditkit.sample(fast, labels, process=process, sampler="euler", steps=50, cfg_scale=2.0)
    print(fast.stats.compute_fraction, fast.stats.peak_cache_bytes)

    # a Pipeline: pipe.generate(...) with the accelerated model
    fast_pipe = dataclasses.replace(pipe, model=accel.accelerate(pipe.model, accel.FirstBlockCacheConfig(0.05)))

    # guidance that refreshes the unconditional branch every 2 guided calls (outside the wrapper)
    images = ditkit.sample(fast, labels, process=process, cfg_scale=1.0,
                           model_wrapper=lambda m: accel.cfg_reuse(m, 2.0, null_label=10, every=2))

Cache policies (one at a time):
    FORAConfig             static reuse every N calls (Selvaraju et al. 2024)            ``forecast.py``
    DeltaDiTConfig         Δ-Cache of rear blocks early, front blocks late (Chen et al. 2024)  ``delta.py``
    FirstBlockCacheConfig  skip blocks 1..L-1 while block 0's residual barely moves ``fbcache.py``
    TeaCacheConfig         accumulated modulated-input change, self-fitted polynomial (Liu et al. 2025)
                           with `fit_teacache`                                          ``teacache.py``
    TaylorSeerConfig       finite-difference Taylor forecasts, order m (Liu et al. 2025) ``forecast.py``
    GatedTaylorConfig      forecast the trunk, gated by block 0's forecast error (CG-Taylor) ``gated.py``
Token-level:
    RASConfig              region-adaptive sampling with a K/V cache (Liu et al. 2025)  ``ras.py``
Guidance:
    cfg_reuse              unconditional branch refreshed every k calls (FasterCache's CFG-Cache) ``guidance.py``
Video attention (an attention core passed per call by ``WithAttention``, ``attention.py``):
    FarCachedAttention     a sparse pattern every step, the far field every few steps    ``far_cache.py``
    search_plan            offline search of a sparse pattern per (layer, head) (Sparse-vDiT) ``sparse_search.py``

How it fits together: ``runner.Accelerated`` drives the DiT's stages (embed, condition, trunk,
final) and hands the trunk to the policy (``policy.py``) through a ``trunk.Trunk``; the identity
setting of every method (interval 1, threshold 0, sample_ratio 1, every 1) reproduces the baseline
bit for bit, and ``fast.stats`` counts the multiply-accumulates actually executed.
"""

from .attention import WithAttention
from .delta import DeltaDiTConfig
from .far_cache import FarCachedAttention, RefreshSchedule
from .fbcache import FirstBlockCacheConfig
from .forecast import FORAConfig, TaylorSeerConfig
from .gated import GatedTaylorConfig
from .guidance import GuidanceReuse, cfg_reuse
from .policy import CacheConfig, Policy
from .ras import RASConfig
from .runner import Accelerated, AccelStats, UnsupportedCombination, accelerate, calls_per_generation
from .sparse_search import SearchConfig, search_plan
from .steps import Step
from .teacache import TeaCacheConfig, TeaCacheFit, fit_teacache
from .trunk import Trunk, View

__all__ = [
    "accelerate", "Accelerated", "AccelStats", "UnsupportedCombination", "calls_per_generation",
    "FORAConfig", "DeltaDiTConfig", "FirstBlockCacheConfig", "TeaCacheConfig", "TaylorSeerConfig",
    "GatedTaylorConfig", "RASConfig", "cfg_reuse", "GuidanceReuse", "fit_teacache", "TeaCacheFit",
    "CacheConfig", "Policy", "Step", "Trunk", "View",
    "WithAttention", "FarCachedAttention", "RefreshSchedule", "SearchConfig", "search_plan",
]
