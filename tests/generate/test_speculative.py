"""Speculative decoding: greedy output equals the target's own; sampling preserves the target's law.

The models are tiny random configs with weights scaled up (std 0.3) so that next-token
distributions are peaked. Drafts: a smaller random model (it almost never agrees with the
target), a noisy copy of the target (it sometimes does) and the target itself (always).
"""

import copy

import pytest
import torch

from groundwork.errors import ConfigError
from groundwork.generate.config import GenerationConfig
from groundwork.generate.simple import sample
from groundwork.generate.speculative import speculative_generate, speculative_step
from groundwork.models import GPT, GPTConfig, Llama, LlamaConfig

V = 64
PROMPTS = [[1, 2, 3], [7], [10, 20, 30, 40, 50]]
MAX_NEW = 16


def _peaked(model: GPT | Llama) -> GPT | Llama:
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.3)
    return model.eval()


@pytest.fixture(scope="module")
def target() -> GPT | Llama:
    torch.manual_seed(0)
    return _peaked(GPT(GPTConfig(vocab_size=V, max_seq_len=64, d_model=32, n_layers=2, n_heads=4)))


@pytest.fixture(scope="module")
def drafts(target: GPT | Llama) -> dict[str, GPT | Llama]:
    torch.manual_seed(1)
    small = _peaked(
        Llama(LlamaConfig(vocab_size=V, max_seq_len=64, d_model=16, n_layers=1, n_heads=2, d_ff=32))
    )
    noisy = copy.deepcopy(target)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.03 * torch.randn_like(p))
    return {"small": small, "noisy": noisy, "same": target}


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("draft_name", ["small", "noisy", "same"])
def test_greedy_equals_target_greedy(
    target: GPT | Llama, drafts: dict[str, GPT | Llama], draft_name: str, k: int
) -> None:
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=0)
    accepted = proposed = 0
    for prompt in PROMPTS:
        out = speculative_generate(target, drafts[draft_name], prompt, config, k=k)
        assert out.tokens == sample(target, prompt, max_new_tokens=MAX_NEW, temperature=0)
        accepted, proposed = accepted + out.accepted, proposed + out.proposed
    if draft_name == "same":
        assert accepted == proposed > 0  # acceptance rate 1.0
        assert out.acceptance_rate == 1.0
    else:
        assert accepted < proposed  # rejections happened and were repaired
    if draft_name == "noisy":
        assert accepted > 0


def test_llama_target_with_gpt_draft() -> None:
    torch.manual_seed(2)
    target = _peaked(
        Llama(
            LlamaConfig(
                vocab_size=V, max_seq_len=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2
            )
        )
    )
    draft = _peaked(GPT(GPTConfig(vocab_size=V, max_seq_len=64, d_model=16, n_layers=1, n_heads=2)))
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=0)
    for prompt in PROMPTS:
        out = speculative_generate(target, draft, prompt, config, k=2)
        assert out.tokens == sample(target, prompt, max_new_tokens=MAX_NEW, temperature=0)


@pytest.mark.parametrize("draft_name", ["small", "noisy"])
def test_sampling_path_with_top_k_1_equals_greedy(
    target: GPT | Llama, drafts: dict[str, GPT | Llama], draft_name: str
) -> None:
    """With top-k = 1, p and q are one-hot: the rejection rule (and cache rollback) must then
    reproduce greedy decoding exactly (accept iff the argmaxes agree, residual = target's)."""
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=1.0, top_k=1, seed=0)
    for prompt in PROMPTS:
        out = speculative_generate(target, drafts[draft_name], prompt, config, k=3)
        assert out.tokens == sample(target, prompt, max_new_tokens=MAX_NEW, temperature=0)


def test_stop_ids_end_generation(target: GPT | Llama, drafts: dict[str, GPT | Llama]) -> None:
    prompt = PROMPTS[0]
    greedy = sample(target, prompt, max_new_tokens=MAX_NEW, temperature=0)
    stop = greedy[5]
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=0, stop_ids=(stop,))
    out = speculative_generate(target, drafts["noisy"], prompt, config, k=3)
    assert out.tokens == greedy[: greedy.index(stop) + 1]


def test_sampling_is_seeded_and_reports_acceptance(
    target: GPT | Llama, drafts: dict[str, GPT | Llama]
) -> None:
    config = GenerationConfig(max_new_tokens=MAX_NEW, temperature=0.8, top_k=20, seed=3)
    first = speculative_generate(target, drafts["noisy"], PROMPTS[0], config, k=3)
    assert first == speculative_generate(target, drafts["noisy"], PROMPTS[0], config, k=3)
    assert len(first.tokens) == MAX_NEW
    assert all(0 <= t < V for t in first.tokens)
    assert first.proposed > 0 and first.acceptance_rate == first.accepted / first.proposed


# ---------------------------------------------------------------------------------------------
# The acceptance rule in isolation: one position, toy distributions p (target) and q (draft).

P = torch.tensor([0.40, 0.25, 0.15, 0.12, 0.08])
Q = torch.tensor([0.10, 0.15, 0.20, 0.25, 0.30])
N = 50_000


def _chi2_quantile(level: float, df: int) -> float:
    """Solve CDF(x) = level by bisection; CDF(x) = P(df / 2, x / 2), regularised lower gamma."""
    lo, hi = 0.0, 1000.0
    for _ in range(100):
        mid = (lo + hi) / 2
        cdf = torch.special.gammainc(torch.tensor(df / 2), torch.tensor(mid / 2))
        lo, hi = (mid, hi) if cdf < level else (lo, mid)
    return lo


def _chi2(tokens: torch.Tensor, p: torch.Tensor) -> float:
    """Pearson's statistic of the draws against the expected counts N p."""
    counts = torch.bincount(tokens, minlength=p.numel()).double()
    expected = tokens.numel() * p.double()
    return float(((counts - expected) ** 2 / expected).sum())


def _one_step(p: torch.Tensor, q: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """N independent rounds with gamma = 1: draft x ~ q, then the acceptance test."""
    g = torch.Generator().manual_seed(seed)
    x = torch.multinomial(q, N, replacement=True, generator=g)  # (N,)
    accepted, replacement = speculative_step(p.expand(N, -1), q.expand(N, -1), x, g)
    return torch.where(accepted, x, replacement), accepted


def test_chi2_quantile() -> None:
    assert _chi2_quantile(0.999, 4) == pytest.approx(18.4668, abs=1e-3)  # statistical tables


def test_acceptance_rule_preserves_target_distribution() -> None:
    critical = _chi2_quantile(0.999, df=P.numel() - 1)
    emitted, accepted = _one_step(P, Q, seed=0)
    assert _chi2(emitted, P) < critical
    # acceptance rate alpha = sum_x min(p(x), q(x)) = 0.68 here; its standard error is ~0.002
    alpha = float(torch.minimum(P, Q).sum())
    assert float(accepted.double().mean()) == pytest.approx(alpha, abs=0.01)


def test_chi2_test_catches_wrong_rules() -> None:
    """The test above has power: accepting always gives q, rejecting always the residual."""
    critical = _chi2_quantile(0.999, df=P.numel() - 1)
    g = torch.Generator().manual_seed(0)
    draws = torch.multinomial(Q, N, replacement=True, generator=g)
    assert _chi2(draws, P) > critical  # "accept always" emits the draft's tokens
    _, replacement = speculative_step(P.expand(N, -1), Q.expand(N, -1), draws, g)
    assert _chi2(replacement, P) > critical  # "reject always" emits only the residual


def test_identical_distributions_always_accept() -> None:
    _, accepted = _one_step(P, P, seed=0)
    assert bool(accepted.all())


def test_config_errors(target: GPT | Llama) -> None:
    config = GenerationConfig(max_new_tokens=4, temperature=0)
    with pytest.raises(ConfigError, match="empty"):
        speculative_generate(target, target, [], config)
    with pytest.raises(ConfigError, match="k "):
        speculative_generate(target, target, [1], config, k=0)
    torch.manual_seed(0)
    other = GPT(GPTConfig(vocab_size=V + 1, max_seq_len=64, d_model=16, n_layers=1, n_heads=2))
    with pytest.raises(ConfigError, match="vocabularies"):
        speculative_generate(target, other, [1], config)
