"""ditkit's samplers against diffusers' schedulers: same model callable, same noise, same grid.

Every test runs one model callable through a ditkit sampler and through a diffusers scheduler loop
(``set_timesteps`` / ``step``) and compares the whole trajectory (x after every step), with the
tolerance stated in the test name. The differences left are float32 rounding: diffusers holds its
schedules in float32 (``alphas_cumprod`` is a float32 cumprod), ditkit in float64.

Grids. Where the two libraries space timesteps differently by design, both sides are put on the
same grid, and the test says how:
  * DDPM / DPM-Solver++: diffusers' ``set_timesteps(timesteps=...)`` takes ditkit's respaced
    ``timestep_map`` (ditkit's ``"N"`` respacing is IDDPM's, which keeps 0 and 999; diffusers'
    default spacings do not).
  * DDIM: diffusers' DDIM steps with a fixed stride (prev = t - 1000 // N), so only stride grids
    compare; ditkit's ``"ddimN"`` respacing equals diffusers' ``timestep_spacing="leading"`` when N
    divides 1000 (checked in the test). ditkit's default respacing for N steps, ``str(N)``, differs.
  * Flow-matching Euler: diffusers' default grid is linspace(1, σ_min, N) with σ_min = shift(1/1000),
    shifted again, then 0; ditkit's is shift(linspace(1, 0, N + 1)). Passing
    ``sigmas=linspace(1, 0, N + 1)[:-1]`` gives diffusers ditkit's grid (its shift is then applied once).
  * DPM-Solver++(2M) final steps: diffusers (``final_sigmas_type="zero"``) takes only the last step
    first order; ditkit by default also the step into the last kept timestep, which on IDDPM grids
    spans a long log-SNR interval. ``lower_order_final=1`` selects diffusers' rule (both are shown).

Noise. DDPM and DDIM(eta > 0) draw one ``torch.randn(x.shape, generator=g)`` per noisy step in
both libraries (diffusers' ``randn_tensor`` on the CPU), so two generators with the same seed feed
both sides identical per-step noise.
"""

import pytest
import torch

from ditkit import DiT, DiTConfig
from ditkit.diffusion import samplers
from ditkit.diffusion.flow import FlowMatching
from ditkit.diffusion.gaussian import GaussianConfig, GaussianDiffusion

diffusers = pytest.importorskip("diffusers")
diffusers.utils.logging.set_verbosity_error()

C, SIDE, N = 4, 8, 2
LABELS = torch.tensor([3, 7])
DATA_STD = 0.5  # the callables are the exact denoisers of x0 ~ N(0, 0.5²), plus a small random DiT


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_dit(learn_sigma: bool) -> DiT:
    torch.manual_seed(0)
    model = DiT(DiTConfig(input_size=SIDE, patch_size=2, in_channels=C, hidden_size=32, depth=1, num_heads=2,
                          num_classes=10, learn_sigma=learn_sigma)).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():  # open the adaLN-Zero gates so the network matters
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def gaussian_model_fn(learn_sigma: bool = False, prediction: str = "epsilon"):
    """(x, t, y) -> eps (or v) [+ variance channels in [-1, 1]]; t = the integer step index as a tensor."""
    net = _tiny_dit(learn_sigma)
    alphas_cumprod = GaussianDiffusion().alphas_cumprod

    @torch.no_grad()
    def fn(x, t, y):
        ab = alphas_cumprod[t.long()].float().view(-1, 1, 1, 1)  # (N, 1, 1, 1)
        eps = (1 - ab).sqrt() * x / (ab * DATA_STD**2 + 1 - ab)  # E[eps | x_t] for Gaussian data
        out = net(x, t, y)
        eps = eps + 0.1 * out[:, :C]
        pred = eps if prediction == "epsilon" else (ab.sqrt() * eps - (1 - ab).sqrt() * (x - (1 - ab).sqrt() * eps)
                                                    / ab.sqrt())  # v = sqrt(ab) eps - sqrt(1 - ab) x0
        return torch.cat([pred, torch.tanh(out[:, C:])], dim=1) if learn_sigma else pred

    return fn


def flow_model_fn():
    """(x, t, y) -> velocity eps - x0; t = 1000 s (s = 1 noise)."""
    net = _tiny_dit(False)

    @torch.no_grad()
    def fn(x, t, y):
        s = (t.float() / 1000).view(-1, 1, 1, 1)
        v = (s - (1 - s) * DATA_STD**2) / ((1 - s) ** 2 * DATA_STD**2 + s**2) * x  # E[eps - x0 | x_s]
        return v + 0.1 * net(x, t, y)

    return fn


def _noise():
    return torch.randn(N, C, SIDE, SIDE, generator=torch.Generator().manual_seed(5))


def ditkit_trajectory(sampler, model_fn, process, **kwargs) -> list[torch.Tensor]:
    traj = []
    sampler(model_fn, _noise(), process, model_kwargs={"y": LABELS},
            callback=lambda i, t, x: traj.append(x.clone()), **kwargs)
    return traj


def diffusers_trajectory(scheduler, model_fn, generator=None, **step_kwargs) -> list[torch.Tensor]:
    x, traj = _noise(), []
    for t in scheduler.timesteps:
        out = model_fn(x, t.expand(N), LABELS)
        if generator is not None:
            step_kwargs["generator"] = generator
        x = scheduler.step(out, t, x, **step_kwargs).prev_sample
        traj.append(x)
    return traj


def assert_trajectories_close(ours, theirs, atol):
    assert len(ours) == len(theirs)
    assert theirs[-1].abs().max() > 0.5  # a real trajectory, not a collapse to 0
    for i, (a, b) in enumerate(zip(ours, theirs)):
        diff = (a - b).abs().max().item()
        assert diff <= atol, f"step {i}: max |ditkit - diffusers| = {diff:.3g} > {atol:g}"


# ----------------------------------------------------------------------------- DDPM


@pytest.mark.parametrize(("variance_type", "learn_sigma", "fixed_variance"), [
    ("learned_range", True, "large"),  # DiT: IDDPM learned-range variance from the 2nd half of the output
    ("fixed_small", False, "small"),
    ("fixed_large", False, "large"),
])
def test_ddpm_matches_diffusers_ddpm_on_50_respaced_steps_atol_5e_5(variance_type, learn_sigma, fixed_variance):
    """Ancestral DDPM on DiT's respaced chain ("50": IDDPM spacing 0..999), the same timesteps handed to
    diffusers as custom timesteps; the respaced betas 1 - ab[s_k]/ab[s_k-1] are the same on both sides."""
    from diffusers import DDPMScheduler

    process = GaussianDiffusion(GaussianConfig(learn_sigma=learn_sigma, fixed_variance=fixed_variance)).respace("50")
    fn = gaussian_model_fn(learn_sigma)
    ours = ditkit_trajectory(samplers.ddpm_sample, fn, process, generator=torch.Generator().manual_seed(9))
    sched = DDPMScheduler(variance_type=variance_type, clip_sample=False)
    sched.set_timesteps(timesteps=list(reversed(process.timestep_map)))
    theirs = diffusers_trajectory(sched, fn, generator=torch.Generator().manual_seed(9))
    assert_trajectories_close(ours, theirs, atol=5e-5)


def test_ddpm_matches_diffusers_ddpm_on_the_full_1000_step_chain_atol_5e_4():
    """The unrespaced chain (diffusers' default grid for 1000 steps, 999..0). The tolerance is looser because
    diffusers' float32 cumprod of 1000 alphas drifts ~1e-5 relative from ditkit's float64 schedule."""
    from diffusers import DDPMScheduler

    process = GaussianDiffusion(GaussianConfig(learn_sigma=True))
    fn = gaussian_model_fn(True)
    ours = ditkit_trajectory(samplers.ddpm_sample, fn, process, generator=torch.Generator().manual_seed(9))
    sched = DDPMScheduler(variance_type="learned_range", clip_sample=False)
    sched.set_timesteps(1000)
    assert sched.timesteps.tolist() == list(range(999, -1, -1))
    theirs = diffusers_trajectory(sched, fn, generator=torch.Generator().manual_seed(9))
    assert_trajectories_close(ours, theirs, atol=5e-4)


# ----------------------------------------------------------------------------- DDIM


@pytest.mark.parametrize("prediction", ["epsilon", "v"])
@pytest.mark.parametrize(("steps", "eta"), [(50, 0.0), (10, 0.0), (50, 1.0)])
def test_ddim_matches_diffusers_ddim_leading_spacing_atol_2e_5(steps, eta, prediction):
    """DDIM (eq. 12) with ditkit's "ddimN" respacing == diffusers' timestep_spacing="leading" (N divides 1000),
    set_alpha_to_one=True (the last step lands on ab = 1 in both). eta = 1 shares the per-step noise."""
    from diffusers import DDIMScheduler

    process = GaussianDiffusion(GaussianConfig(learn_sigma=False, prediction=prediction)).respace(f"ddim{steps}")
    fn = gaussian_model_fn(False, prediction)
    ours = ditkit_trajectory(samplers.ddim_sample, fn, process, eta=eta, generator=torch.Generator().manual_seed(9))
    sched = DDIMScheduler(clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                          prediction_type="epsilon" if prediction == "epsilon" else "v_prediction")
    sched.set_timesteps(steps)
    assert sched.timesteps.tolist() == list(reversed(process.timestep_map))  # the same grid
    theirs = diffusers_trajectory(sched, fn, generator=torch.Generator().manual_seed(9) if eta else None, eta=eta)
    assert_trajectories_close(ours, theirs, atol=2e-5)


def test_ddim_default_respacing_is_not_diffusers_leading():
    """Documented difference: ditkit's default grid for N DDIM steps is IDDPM's str(N) (ends at 999, as the
    reference DiT samples), diffusers' "leading" grid stops at 1000 - 1000/N. Use spacing="ddimN" to match."""
    from diffusers import DDIMScheduler

    sched = DDIMScheduler(timestep_spacing="leading")
    sched.set_timesteps(50)
    ours = GaussianDiffusion().respace("50").timestep_map
    assert max(ours) == 999 and sched.timesteps.max().item() == 980


# ----------------------------------------------------------------------------- DPM-Solver++(2M)


@pytest.mark.parametrize("spacing", ["10", "20", "ddim25"])
def test_dpm_solver_2m_matches_diffusers_dpmsolver_pp_order2_atol_1e_4(spacing):
    """DPM-Solver++(2M) (solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
    final_sigmas_type="zero": the grid ends at sigma = 0) on ditkit's respaced grid passed as custom timesteps,
    with ditkit's ``lower_order_final=1`` = diffusers' final-step rule (only the step to sigma = 0 is first
    order; diffusers' lower_order_final=True changes nothing more at order 2)."""
    from diffusers import DPMSolverMultistepScheduler

    process = GaussianDiffusion(GaussianConfig(learn_sigma=False)).respace(spacing)
    fn = gaussian_model_fn(False)
    ours = ditkit_trajectory(samplers.dpm_solver_2m_sample, fn, process, lower_order_final=1)
    sched = DPMSolverMultistepScheduler(solver_order=2, algorithm_type="dpmsolver++", solver_type="midpoint",
                                        lower_order_final=True, final_sigmas_type="zero", euler_at_final=False)
    sched.set_timesteps(timesteps=list(reversed(process.timestep_map)))
    theirs = diffusers_trajectory(sched, fn)
    assert_trajectories_close(ours, theirs, atol=1e-4)


def test_dpm_solver_2m_default_final_rule_differs_from_diffusers_by_design():
    """ditkit's default also takes the step into the last kept timestep first order (samplers.py); the
    trajectories agree up to that step and differ after it."""
    from diffusers import DPMSolverMultistepScheduler

    process = GaussianDiffusion(GaussianConfig(learn_sigma=False)).respace("10")
    fn = gaussian_model_fn(False)
    ours = ditkit_trajectory(samplers.dpm_solver_2m_sample, fn, process)
    sched = DPMSolverMultistepScheduler(solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    sched.set_timesteps(timesteps=list(reversed(process.timestep_map)))
    theirs = diffusers_trajectory(sched, fn)
    assert_trajectories_close(ours[:-2], theirs[:-2], atol=1e-4)
    assert (ours[-1] - theirs[-1]).abs().max() > 1e-2


def test_lower_order_final_is_validated():
    process = GaussianDiffusion(GaussianConfig(learn_sigma=False)).respace("10")
    with pytest.raises(ValueError, match="lower_order_final"):
        samplers.dpm_solver_2m_sample(gaussian_model_fn(False), _noise(), process, lower_order_final=0,
                                      model_kwargs={"y": LABELS})


# ----------------------------------------------------------------------------- flow matching


@pytest.mark.parametrize("shift", [1.0, 3.0])
@pytest.mark.parametrize("steps", [10, 28])
def test_flow_euler_matches_diffusers_flow_match_euler_atol_5e_6(shift, steps):
    """Euler from s = 1 to 0 on shift(linspace(1, 0, N + 1)): diffusers gets the unshifted sigmas
    linspace(1, 0, N + 1)[:-1] (it applies ``shift`` itself and appends 0); the network time is 1000 s."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    fn = flow_model_fn()
    ours = ditkit_trajectory(samplers.euler_sample, fn, FlowMatching(), steps=steps, shift=shift)
    sched = FlowMatchEulerDiscreteScheduler(shift=shift)
    sched.set_timesteps(sigmas=torch.linspace(1, 0, steps + 1)[:-1].numpy())
    torch.testing.assert_close(sched.sigmas.double(), samplers.flow_time_grid(steps, shift), rtol=0, atol=1e-6)
    theirs = diffusers_trajectory(sched, fn)
    assert_trajectories_close(ours, theirs, atol=5e-6)


def test_flow_default_grids_differ_by_design():
    """diffusers' default FlowMatchEuler grid stops at sigma_min = shift(1/1000) (shifted twice) before 0;
    ditkit's grid is uniform in s before the shift. The parity test above passes diffusers ditkit's grid."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(10)
    assert sched.sigmas[-2].item() == pytest.approx(0.008929, abs=1e-5)
    assert samplers.flow_time_grid(10, 3.0)[-2].item() == pytest.approx(0.25)
