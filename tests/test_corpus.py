"""The healthy corpus in real fits: every program and seed without a warning, an error or a coverage gap, and
every injected fault diagnosed with a code that names it. The faults LossGuard does not catch are listed in
``KNOWN_MISSES`` with the reason: a strict xfail, so a fix that starts catching one fails until it is removed.

Every fit runs on one torch thread in a worker process of its own. The selected fits start when the suite's tests
are collected, on every core but the one the rest of the suite runs on, and these tests run last, when that core
joins the fits (tests/conftest.py); each test judges its own fit's result once it is in. A faulty fit stops once
a diagnosis names its fault (its verdict cannot change after; ``python -m benchmarks.corpus`` runs every fit to its
end). ``LOSSGUARD_CORPUS_EARLY=0`` starts the fits only when their tests are reached, with nothing beside them (to
tell whether a timing test that fails was slowed by a fit running beside it). The suite runs each healthy program
with one of the benchmark's three seeds (``SUITE_SEEDS``), to keep CI within its time limit;
``LOSSGUARD_CORPUS_SEEDS=0,1,2`` runs all three.
"""

from __future__ import annotations

import os

import pytest

from benchmarks.corpus import PROGRAMS
from benchmarks.corpus.run import SEEDS, Result, plan
from benchmarks.corpus.workers import Fits, available_cores
from lightning_lossguard.catalog import CATALOG
from tests.conftest import CORPUS_EARLY, CORPUS_FITS, corpus_fits

SUITE_SEEDS = tuple(int(seed) for seed in os.environ.get("LOSSGUARD_CORPUS_SEEDS", "0").split(","))
"""The seeds each healthy program runs with here. One of the benchmark's three: the third seed's 140 fits (385 s of
fitting) were left out when CI reached 1,199 s of its 20 minutes; the second seed's (~590 s of fitting, ~300 s of the
run) when a fresh-clone CI run took 1,389 s on a host 1.6x slower than the one before. A cut in coverage, on purpose:
``python -m benchmarks.corpus`` (the docs' table) still runs every seed."""

HEALTHY = plan(sorted(PROGRAMS), SUITE_SEEDS, faults=False)
FAULTS = [job for job in plan(sorted(PROGRAMS), (), faults=True)]

KNOWN_MISSES = {
    ("linear_converged_early", "frozen"): "the one trainable bias is 1 of 9 parameters; it fits the mean, then rests",
    ("mdn_inverse_sine_h", "frozen"): "the trainable bias fits the marginal: the loss falls 64%, like learning",
    ("simsiam_h", "frozen"): "a negative-cosine loss near 0 has no relative level to be stuck at",
    ("ppo_cartpole_h", "flipped_sign"): "an RL loss that rises is only an info without a second signal",
    ("a2c_cartpole_h", "flipped_sign"): "an RL loss that rises is only an info without a second signal",
    ("dcgan_manual", "lr_x1000"): "no loss returned (manual GAN) and the gradients shrink rather than explode",
    ("mixup_cutmix_h", "exp_output"): "learns slower (val acc 0.61 vs 0.89): no stall, blow-up or gradient collapse",
    ("residual_sr_h", "exp_output"): "the loss falls to the bicubic baseline and rests: by the loss, a converged run",
    ("siren_image_fit_h", "lr_x1000"): "the loss falls 31% to the image's mean and rests: by the loss, a converged run",
    ("pinn_heat_equation_h", "frozen"): "the trainable bias keeps fitting the initial condition: the loss falls 2x",
    ("hypernetwork_sines_h", "frozen"): "the trainable output bias is a target network shared by all tasks: it fits",
    ("hash_grid_field_h", "frozen"): "the trainable output bias fits the signal's mean: the loss falls 45%, then rests",
    ("style_transfer_pixels_h", "lr_x1000"): "it blows up within the 8 batches its batch-size-1 reference averages",
    ("darts_bilevel_search_h", "lr_x1000"): "a 7x loss blow-up in 3 steps, recovered; pre-clip norm ~2x healthy",
    ("entropy_adaptation_h", "lr_x1000"): "collapse to one class reads as convergence: entropy 1e-15, val never low",
    ("instance_memory_bank_h", "lr_x1000"): "bounded (unit-norm) loss; its noisy k-NN val loss reads as overfitting",
    ("instance_memory_bank_h", "frozen"): "the bank fills with the random encoder's features: loss falls 30%, rests",
    ("poisson_counts_h", "frozen"): "the trainable bias fits the mean log rate: the signed loss falls 0 -> -8.8, rests",
    ("barlow_twins_h", "flipped_sign"): "a bounded loss (correlations in [-1, 1]): no blow-up; val_loss_rising an info",
    ("keypoint_heatmaps_h", "frozen"): "the trainable output bias fits the mean heatmap: the loss falls 2x, then rests",
    ("swav_prototypes_h", "frozen"): "the trainable prototypes cluster the random encoder's features: loss falls 29%",
    ("evidential_classifier_h", "exp_output"): "exp evidence is one of the method's own choices: val acc 0.87 vs "
    "0.90, the val loss 3.5x its low; val_loss_rising warns, no code that names the output",
    ("cyclical_kl_vae_h", "exp_output"): "exp keeps the decoder's pixels positive: the ELBO falls 210 -> 142 and rests "
    "(healthy: 62 -> 38), by the loss a converged run; the module hands over no predictions for OutputMonitor",
    ("pendulum_controller_bptt_h", "flipped_sign"): "the negated cost saturates within 32 steps (the pendulum spins "
    "as fast as its bounded torque allows): a falling training loss, then flat; the val loss is 7x the healthy start "
    "at the first evaluation and rises only 9% after",
    ("transductive_gcn_full_batch_h", "lr_x1000"): "one step an epoch: the first update takes the loss 1.9 -> 549, "
    "Adam brings it back down, and early stopping ends the run at step 35, under the 50 batches loss_divergence "
    "needs (the run-too-short note says so)",
    ("lstm_forecaster_early_stopped_h", "lr_x1000"): "under clipping at 0.1 the loss jumps to 50x its first batches "
    "and back within 30 steps, then rests at 1.3x its start (healthy: a 20x fall); the jump inflates loss_plateau's "
    "initial level, and early stopping ends the run at step 288",
    (
        "gae_full_batch_early_stopped_h",
        "frozen",
    ): "the last bias alone: the loss stays within 0.3% of ln 2 from the first "
    "batch on (0.6947, just outside the chance-level tolerance), so the stop is told as an info (learned nothing, or "
    "nothing left to learn), not a warning",
    ("tabular_plateau_early_stopped_h", "exp_output"): "exp keeps predictions positive where 43% of the targets are "
    "negative: the MSE falls 2.0 -> 0.69 (healthy 0.15) and rests, by the loss a converged run; no predictions "
    "handed over for OutputMonitor",
    ("embedding_bag_val_acc_stopped_h", "frozen"): "the last bias alone learns the class prior (64/36): the training "
    "loss falls 0.697 -> 0.656 (-5.9%, past loss_plateau's 5% min_improvement) while val_acc rests at the majority "
    "rate, and early stopping ends the run at step 80, before loss_plateau's 100 batches",
    ("embedding_bag_val_acc_stopped_h", "flipped_sign"): "the negated loss falls -0.79 -> -112 in six blocks, one "
    "short of a significant trend (Mann-Kendall z 2.6 against 3), and early stopping on val_acc (constant at the "
    "minority rate) ends the run at step 64; an accuracy has no sign for the stop's negated reading",
    ("oversampled_rare_positives_h", "exp_output"): "exp keeps every logit positive, so no probability falls under "
    "1/2: the balanced training loss falls 0.81 -> 0.52 (healthy 0.70 -> 0.31) and the natural-distribution val "
    "loss 1.16 -> 0.76 (healthy 0.32), while the ranking survives (AUROC 0.90 vs 0.92); by the loss a slower run, "
    "and the module hands over no predictions for OutputMonitor",
    ("loss_in_forward_tagger_h", "lr_x1000"): "AdamW at 3 with a linear decay to 0: the loss jumps from 1.62 to ~11 "
    "(6.7x) by step 16 and falls back to 1.53 by the end, just under chance (ln 5 = 1.61); far below the blow-up "
    "rule's 100x, and by the loss a run that came back",
    ("layerwise_decay_finetune_h", "lr_x1000"): "AdamW at 2.0 on the head (1/32 of it on the embeddings): the loss "
    "jumps from 1.8 to ~47 (26x) by step 48 with gradients 3.6x, far under the blow-up rule's 100x, and settles from "
    "step ~170 at ~1.35, the entropy of the four classes' prior (1.338; ln 4 = 1.386), batch noise keeping it off "
    "ln K: the model collapsed to the prior, which only the labels' frequencies (not the loss) would show",
    ("gradient_centralization_h", "exp_output"): "exp keeps every prediction positive for a target that is often "
    "negative: the Huber loss still falls 0.66 -> 0.40 (healthy 0.42 -> 0.18) and the val MAE ends 0.72 (healthy "
    "0.47); by the loss a slower fit, and the module hands over no predictions for OutputMonitor",
    ("soft_oblivious_trees_h", "lr_x1000"): "Adam at 10: the loss spikes to 57 in its first steps and settles at "
    "~0.66, the entropy of the 64/36 class prior (ln 2 = 0.69), every validation at the majority rate 0.635: the "
    "model collapsed to the prior, which only the labels' frequencies (not the loss) would show",
}

KNOWN_FALSE_ALARMS: dict[tuple[str, int], str] = {}
"""Healthy runs LossGuard still warns on, found by a held-out batch and not fixed yet: strict xfails, so a fix that
quiets one fails until it is removed (docs/performance.md says what each one is)."""

TIMING_NOISE = {
    "deep_kernel_gp_h": "slowing_loss_step",
}
"""A timing code left out of a program's healthy verdict, every other code still judged. The deep-kernel GP's loss
slows for real: its kernel's ``exp`` turns values subnormal as the features spread, and its Cholesky's CPU time goes
from 0.4 to 1.4 ms a step (flat at 0.4 ms with ``torch.set_flush_denormal(True)``). Whether that crosses
``slowing_loss_step``'s 1.5x by its judging step is a matter of chance and host: on an AMD host 0 of 42 runs warned
(its subnormal arithmetic costs far less); on an Intel host, 4 of 40 runs alone and 3 of 36 beside two CPU-bound
processes (docs/performance.md). A true but borderline finding: this keeps CI from failing at random on it."""

HOST_DEPENDENT = {
    ("attention_mil_h", 1, ""): "on an AMD EPYC host its validation falls to chance for two epochs (val acc 0.99 -> "
    "0.50 -> 0.99, val loss 0.048 -> 0.74) and val_loss_rising says so: a real transient instability; not on Intel",
    ("instance_memory_bank_h", 0, "lr_x1000"): "missed on an Intel host (its noisy k-NN val loss reads as "
    "overfitting); on an AMD EPYC host dead_gradients names it at step 125",
    ("evidential_classifier_h", 1, ""): "its gradient norm grows 10x in epochs 1-2 as the annealed KL term switches "
    "on, while the loss falls; whether the sampled steps catch enough spikes for an exploding_gradients warning at "
    "step 131 depends on the budget's stride, set from measured time: 5 of 7 runs on one host warned, none without a "
    "budget; with the baseline counted in steps it still warns in 3 of 6 runs (the norm rises 10x in ~60 steps)",
    ("lion_sign_optimizer_h", 0, "lr_x1000"): "named on an Intel host; on an AMD EPYC host the x1000 rate does not "
    "break the fit (val acc 0.92 against the healthy run's 0.66, loss 1.29 -> 0.16): no fault to name, nothing said",
    ("image_text_contrastive_h", 0, "lr_x1000"): "named on an Intel host; on an AMD EPYC host the model collapses at "
    "once and rests at ln 128 (chance) from its first batch: loss_plateau warns that the outputs ignore the input, "
    "with 'lower the learning rate' second, which the fault's phrase does not count",
}
"""Fits whose verdict differs between hosts, or between runs: one torch thread makes a fit deterministic on one
machine, but the CPU's vector instructions change the float results, and these chaotic trajectories follow them; and
the budget picks which steps' gradients are sampled from the time it measures, which can decide a borderline verdict.
A non-strict expected failure: either verdict passes (docs/performance.md says which host or run gave which).
Loosened gates, on purpose."""

Job = tuple[str, int, str]


@pytest.fixture(scope="module")
def fits(request: pytest.FixtureRequest) -> Fits[Job, Result]:
    """Every corpus fit this session selected (``-k`` included): they started when the tests were collected, one
    worker process per core but this one; this one's core joins them now (tests/conftest.py)."""
    started: Fits[Job, Result] = corpus_fits(request.session, workers=0)
    return started


def _case(job: Job, known: str | None, id: str) -> object:
    """A fit's test case; a known false alarm or miss (``known``: the reason) is a strict expected failure, one whose
    verdict depends on the host (``HOST_DEPENDENT``) a non-strict one."""
    marks = [pytest.mark.xfail(strict=True, reason=known)] if known else []
    if job in HOST_DEPENDENT:
        marks = [pytest.mark.xfail(strict=False, reason=HOST_DEPENDENT[job])]
    return pytest.param(*job, marks=marks, id=id)


def _healthy_case(name: str, seed: int, fault: str) -> object:
    return _case((name, seed, fault), KNOWN_FALSE_ALARMS.get((name, seed)), f"{name}-{seed}-")


@pytest.mark.slow
@pytest.mark.corpus_fit
@pytest.mark.parametrize(("name", "seed", "fault"), [_healthy_case(*job) for job in HEALTHY])
def test_a_healthy_program_gets_no_warning_error_or_gap(
    fits: Fits[Job, Result], name: str, seed: int, fault: str
) -> None:
    result = fits.result((name, seed, fault))
    assert result.error == "", result.error
    alarms = [d for d in result.alarms if d.code != TIMING_NOISE.get(name)]
    assert alarms == [] and result.gaps == [], result.summary()


def _fault_case(name: str, seed: int, fault: str) -> object:
    return _case((name, seed, fault), KNOWN_MISSES.get((name, fault)), f"{name}+{fault}")


@pytest.mark.slow
@pytest.mark.corpus_fit
@pytest.mark.parametrize(("name", "seed", "fault"), [_fault_case(*job) for job in FAULTS])
def test_an_injected_fault_is_named(fits: Fits[Job, Result], name: str, seed: int, fault: str) -> None:
    result = fits.result((name, seed, fault))
    assert result.error == "", result.error
    assert result.correct is not None, result.summary()
    assert result.correct.remedies and result.correct.evidence


def test_known_misses_are_real_corpus_faults() -> None:
    assert set(KNOWN_MISSES) <= {(name, fault) for name, _, fault in FAULTS}


def test_known_false_alarms_are_real_healthy_runs() -> None:
    assert set(KNOWN_FALSE_ALARMS) <= {(name, seed) for name, seed, _ in plan(sorted(PROGRAMS), SEEDS, faults=False)}


def test_the_suite_runs_seeds_the_benchmark_runs() -> None:
    assert SUITE_SEEDS and set(SUITE_SEEDS) <= set(SEEDS)


def test_host_dependent_verdicts_are_real_corpus_fits() -> None:
    assert set(HOST_DEPENDENT) <= set(plan(sorted(PROGRAMS), SEEDS, faults=True))


def test_timing_noise_names_real_programs_and_codes() -> None:
    assert set(TIMING_NOISE) <= {name for name, _, _ in HEALTHY}
    assert set(TIMING_NOISE.values()) <= set(CATALOG)


def test_the_corpus_fits_started_before_their_tests_which_run_last(request: pytest.FixtureRequest) -> None:
    items = request.session.items
    judged = [i for i, item in enumerate(items) if item.get_closest_marker("corpus_fit")]
    if not judged:
        pytest.skip("no corpus fit is selected")
    assert judged == list(range(len(items) - len(judged), len(items)))  # the corpus' tests come last
    if not CORPUS_EARLY:
        assert CORPUS_FITS not in request.session.stash  # asked to start them only when their tests are reached
        return
    fits = request.session.stash[CORPUS_FITS]
    assert fits.workers == max(0, available_cores() - 1)  # this test runs before them: this core is not used yet
