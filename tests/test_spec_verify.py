"""speculative.verify / verify_greedy (the pure rejection-sampling rule) and SpeculativeConfig.

Distribution tests: with position-wise target distributions p_0..p_k that do not depend on the
context, the token emitted at position j (when a verification reaches it) must follow p_{j-1}
exactly, whatever the draft's q. Each case draws 20,000 verifications from fixed seeds (so the
test is deterministic) and runs a chi-square test per reached position; a deliberately wrong rule
(always accept) is shown to fail the same test, so the test has power.
"""
from __future__ import annotations

import pytest
import torch

from pagedinfer.engine.speculative import SpeculativeConfig, verify, verify_greedy

V = 16
DRAWS = 20_000


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's chi-square test of counts [V] against probs [V]; cells with expected < 5 are
    pooled into one."""
    n = counts.sum().item()
    expected = probs.double() * n
    small = expected < 5
    obs = torch.cat([counts[~small].double(), counts[small].double().sum().view(1)])
    exp = torch.cat([expected[~small], expected[small].sum().view(1)])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    df = len(exp) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat / 2))


def random_dists(rows: int, gen: torch.Generator, sharp: float = 2.0, zeros: bool = False):
    logits = torch.randn(rows, V, generator=gen, dtype=torch.float64) * sharp
    if zeros:  # top-k style supports: some tokens impossible
        logits[:, V // 2:] = float("-inf")
    return torch.softmax(logits, -1).float()


def run_verifications(k: int, p: torch.Tensor, q: torch.Tensor | None, seed: int,
                      rule=verify, draws: int = DRAWS):
    """Counts [k+1, V] of the token emitted at each position, and how often each was reached."""
    gen = torch.Generator().manual_seed(seed)
    counts = [[0] * V for _ in range(k + 1)]
    if q is None:  # a deterministic proposer: fixed drafts per trial, drawn once up front
        drafts_all = torch.randint(0, V, (draws, k), generator=gen)
    else:
        drafts_all = torch.stack([torch.multinomial(q[i], draws, replacement=True, generator=gen)
                                  for i in range(k)], dim=1)
    for drafts in drafts_all.tolist():
        out = rule(drafts, p, q, gen)
        assert 1 <= len(out) <= k + 1
        assert out[:-1] == drafts[: len(out) - 1]  # accepted drafts are a prefix of the drafts
        for j, t in enumerate(out):
            counts[j][t] += 1
    return torch.tensor(counts)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 6, 7, 8])
def test_emitted_tokens_follow_the_target(k):
    gen = torch.Generator().manual_seed(1000 + k)
    p = random_dists(k + 1, gen)
    # q near p (many acceptances, so the bonus path is reached) but different enough that the
    # residual path is taken often too.
    mix = torch.where(torch.arange(k)[:, None] % 2 == 0, 0.9, 0.6)
    q = mix * p[:k] + (1 - mix) * random_dists(k, gen)
    counts = run_verifications(k, p, q, seed=k)
    assert counts[0].sum() == DRAWS
    assert counts[k].sum() > 200, "the bonus-token path was hardly reached"
    for j in range(k + 1):
        if counts[j].sum() >= 200:
            pv = chi_square_pvalue(counts[j], p[j])
            assert pv > 1e-3, f"position {j}: p-value {pv:.2e}, counts {counts[j].tolist()}"


def test_point_mass_drafts_and_restricted_supports():
    """ngram's q is a point mass on the proposed token; p with zeros (top-k) also stays exact."""
    k = 3
    gen = torch.Generator().manual_seed(7)
    p = random_dists(k + 1, gen, zeros=True)
    counts = run_verifications(k, p, None, seed=11)
    for j in range(k + 1):
        if counts[j].sum() >= 200:
            assert chi_square_pvalue(counts[j], p[j]) > 1e-3
            assert counts[j, V // 2:].sum() == 0  # never a token the target excludes


def test_a_wrong_rule_fails_the_same_test():
    """Power check: always accepting the draft gives q's distribution, which the test rejects."""
    k = 2
    gen = torch.Generator().manual_seed(3)
    p, q = random_dists(k + 1, gen), random_dists(k, gen)

    def always_accept(drafts, p, q, gen):
        return list(drafts) + [int(torch.multinomial(p[len(drafts)], 1, generator=gen))]

    counts = run_verifications(k, p, q, seed=5, rule=always_accept, draws=5000)
    assert chi_square_pvalue(counts[0], p[0]) < 1e-6


def test_seeded_replay_and_bad_shapes():
    gen = torch.Generator().manual_seed(0)
    p, q = random_dists(4, gen), random_dists(3, gen)
    a = [verify([1, 2, 3], p, q, torch.Generator().manual_seed(9)) for _ in range(3)]
    assert a[0] == a[1] == a[2]
    with pytest.raises(ValueError, match="draft tokens need target_probs"):
        verify([1, 2], p, q, gen)
    # Identical p and q: every draft is accepted.
    assert verify([4, 5, 6], p, p[:3], gen)[:3] == [4, 5, 6]


def test_verify_greedy():
    assert verify_greedy([], [7]) == [7]
    assert verify_greedy([1, 2, 3], [1, 2, 3, 4]) == [1, 2, 3, 4]  # all accepted + bonus
    assert verify_greedy([1, 9, 3], [1, 2, 3, 4]) == [1, 2]  # first mismatch: target's token
    assert verify_greedy([5], [6, 0]) == [6]


@pytest.mark.parametrize("spec, message", [
    (dict(method="medusa"), "unknown method 'medusa'"),
    (dict(method="ngram", num_speculative_tokens=0),
     "num_speculative_tokens must be an int in 1..16, got 0"),
    (dict(method="ngram", num_speculative_tokens=17), "got 17"),
    (dict(method="ngram", num_speculative_tokens=2.5), "got 2.5"),
    (dict(method="draft"), "needs model="),
    (dict(method="ngram", model="x.gguf"), "only used by method 'draft'"),
    (dict(method="ngram", lookahead=3), r"unknown key\(s\) \['lookahead'\]"),
    (dict(num_speculative_tokens=3), "'method' is required"),
    (dict(method="ngram", prompt_lookup_min=3, prompt_lookup_max=2), "prompt_lookup_min"),
])
def test_config_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        SpeculativeConfig.from_dict(spec)
