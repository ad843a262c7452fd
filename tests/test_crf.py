"""The linear-chain CRF against brute-force enumeration of every tag path; BIO constraints; word compaction."""

import itertools
import math

import pytest
import torch
from conftest import tiny_encoder_config

from hf_mtl import MultiTaskConfig, MultiTaskModel
from hf_mtl.crf import (
    LinearChainCRF,
    bio_constraints,
    compact_word_positions,
    gather_word_positions,
    scatter_word_tags,
)

LENGTHS = [4, 0, 1, 3]  # one batch: a full row, an empty one, a single word, a shorter one
BIO_LABELS = ["O", "B-X", "I-X", "B-Y"]


def random_crf(num_tags, constraints=None, seed=0):
    generator = torch.Generator().manual_seed(seed)
    crf = LinearChainCRF(num_tags, *(constraints or ()))
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return crf


def random_batch(num_tags, lengths=LENGTHS, seed=1):
    generator = torch.Generator().manual_seed(seed)
    emissions = 2 * torch.randn(len(lengths), max(lengths), num_tags, generator=generator)
    mask = torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)
    return emissions, mask


def path_score(crf, emissions, path):
    """Score of one path of one row, in float64, and whether the constraints allow it."""
    start, end, transitions = (p.detach().double() for p in (crf.start_transitions, crf.end_transitions, crf.transitions))
    score = start[path[0]] + end[path[-1]] + sum(emissions[i, tag].double() for i, tag in enumerate(path))
    score += sum(transitions[a, b] for a, b in zip(path, path[1:]))
    allowed = bool(crf.allowed_starts[path[0]]) and all(bool(crf.allowed_transitions[a, b]) for a, b in zip(path, path[1:]))
    return float(score), allowed


def all_paths(crf, emissions, length):
    """Every path of `length` tags -> (score, allowed)."""
    return {path: path_score(crf, emissions, path) for path in itertools.product(range(crf.num_tags), repeat=length)}


def logsumexp(values):
    top = max(values)
    return top + math.log(sum(math.exp(value - top) for value in values))


def tags_tensor(paths, length):
    """Paths as one batch of tag rows, -100 after each path."""
    return torch.tensor([list(path) + [-100] * (length - len(path)) for path in paths], dtype=torch.long)


def likelihood_of_paths(crf, emissions, mask, row, paths):
    """log p(path) of each path for one row: the row repeated, one path per copy."""
    copies = len(paths)
    return crf.log_likelihood(emissions[row : row + 1].expand(copies, -1, -1), tags_tensor(paths, emissions.shape[1]),
                              mask[row : row + 1].expand(copies, -1))


@pytest.mark.parametrize("num_tags", [3, 4])
def test_log_partition_and_every_path_likelihood_match_brute_force(num_tags):
    crf = random_crf(num_tags)
    emissions, mask = random_batch(num_tags)
    partition = crf.log_partition(emissions, mask)
    assert partition.dtype == torch.float32 and partition.shape == (len(LENGTHS),)

    for row, length in enumerate(LENGTHS):
        if length == 0:
            assert partition[row] == 0
            continue
        paths = all_paths(crf, emissions[row], length)
        expected_partition = logsumexp([score for score, _ in paths.values()])
        assert partition[row].item() == pytest.approx(expected_partition, abs=1e-4)

        likelihood = likelihood_of_paths(crf, emissions, mask, row, list(paths))
        expected = torch.tensor([score - expected_partition for score, _ in paths.values()], dtype=torch.float32)
        torch.testing.assert_close(likelihood, expected, atol=1e-4, rtol=0)
        assert likelihood.double().exp().sum().item() == pytest.approx(1.0, abs=1e-5)

    # a length-0 row has log-likelihood 0 whatever its tags say
    likelihood = crf.log_likelihood(emissions, torch.full(mask.shape, -100), torch.zeros_like(mask))
    assert torch.equal(likelihood, torch.zeros(len(LENGTHS)))


@pytest.mark.parametrize("num_tags", [3, 4])
def test_viterbi_finds_the_brute_force_best_path_and_its_score(num_tags):
    crf = random_crf(num_tags, seed=2)
    emissions, mask = random_batch(num_tags, seed=3)
    tags, scores = crf.viterbi_decode(emissions, mask)
    assert tags.dtype == torch.long and tags.shape == mask.shape and scores.dtype == torch.float32

    for row, length in enumerate(LENGTHS):
        assert tags[row, length:].tolist() == [-100] * (mask.shape[1] - length)
        if length == 0:
            assert scores[row] == 0
            continue
        paths = all_paths(crf, emissions[row], length)
        best = max(paths, key=lambda path: paths[path][0])
        assert tuple(tags[row, :length].tolist()) == best
        assert scores[row].item() == pytest.approx(paths[best][0], abs=1e-4)


def test_bio_constraints_mask():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "NUM"]
    transitions, starts = bio_constraints(labels)
    assert starts.tolist() == [True, True, False, True, False, True]
    allowed = {(labels[a], labels[b]) for a in range(6) for b in range(6) if transitions[a, b]}
    into_i_per = {previous for previous, tag in allowed if tag == "I-PER"}
    assert into_i_per == {"B-PER", "I-PER"}
    assert {previous for previous, tag in allowed if tag == "I-LOC"} == {"B-LOC", "I-LOC"}
    for tag in ("O", "B-PER", "B-LOC", "NUM"):  # reachable from everything
        assert {previous for previous, to in allowed if to == tag} == set(labels)
    assert transitions.device.type == "cpu" and transitions.dtype == torch.bool


def test_bio_constrained_crf_never_gives_a_disallowed_path_any_probability():
    constraints = bio_constraints(BIO_LABELS)
    crf = random_crf(4, constraints, seed=4)
    emissions, mask = random_batch(4, seed=5)
    emissions[:, :, 2] += 8.0  # I-X everywhere is what the emissions alone would choose

    unconstrained = random_crf(4, seed=4)
    free_tags, _ = unconstrained.viterbi_decode(emissions, mask)
    # so below the constraints, not the emissions, keep I-X out of the start
    assert free_tags[[0, 2, 3], 0].tolist() == [2, 2, 2]

    tags, scores = crf.viterbi_decode(emissions, mask)
    partition = crf.log_partition(emissions, mask)
    for row, length in enumerate(LENGTHS):
        if length == 0:
            continue
        paths = all_paths(crf, emissions[row], length)
        allowed = {path: score for path, (score, ok) in paths.items() if ok}
        disallowed = [path for path, (_, ok) in paths.items() if not ok]
        assert disallowed and allowed
        assert partition[row].item() == pytest.approx(logsumexp(list(allowed.values())), abs=1e-4)
        best = max(allowed, key=allowed.get)
        assert tuple(tags[row, :length].tolist()) == best
        assert scores[row].item() == pytest.approx(allowed[best], abs=1e-4)

        likelihood = likelihood_of_paths(crf, emissions, mask, row, disallowed)
        assert torch.isfinite(likelihood).all()  # a finite penalty: a bad gold path costs a large loss, not NaN
        assert torch.equal(likelihood.exp(), torch.zeros(len(disallowed)))


def test_sgd_on_the_negative_log_likelihood_raises_the_gold_path_probability():
    crf = LinearChainCRF(4, *bio_constraints(BIO_LABELS))
    emissions, mask = random_batch(4, seed=6)
    emissions = emissions.clone().requires_grad_(True)
    gold = torch.tensor([[1, 2, 0, 3], [0, 0, 0, 0], [3, -100, -100, -100], [0, 1, 2, -100]])
    gold = gold.masked_fill(~mask, -100)
    optimizer = torch.optim.SGD([emissions, *crf.parameters()], lr=0.1)

    before = crf.log_likelihood(emissions, gold, mask).detach()
    for _ in range(10):
        optimizer.zero_grad()
        loss = -crf.log_likelihood(emissions, gold, mask).sum()
        loss.backward()
        if _ == 0:
            for name, parameter in crf.named_parameters():
                assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
            assert emissions.grad[~mask].abs().sum() == 0  # positions outside the mask get no gradient
        optimizer.step()
    after = crf.log_likelihood(emissions, gold, mask).detach()
    filled = torch.tensor(LENGTHS) > 0
    assert (after[filled] > before[filled] + 0.1).all(), (before, after)
    assert after[~filled].tolist() == [0.0]


def test_bf16_inputs_and_parameters_are_computed_in_float32():
    """Pure CRF (no matmul): bf16 emissions under bf16 autocast give exactly the float32 results on the same values."""
    crf = random_crf(4, bio_constraints(BIO_LABELS), seed=7)
    emissions, mask = random_batch(4, seed=8)
    emissions = emissions.to(torch.bfloat16)
    tags = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 3, 0, 0]]).masked_fill(~mask, -100)
    bf16_crf = random_crf(4, bio_constraints(BIO_LABELS), seed=7).to(torch.bfloat16)
    with torch.no_grad():  # bf16 parameters hold rounded values: give the reference the same ones
        for target, source in zip(crf.parameters(), bf16_crf.parameters()):
            target.copy_(source.float())
    reference = (crf.log_partition(emissions.float(), mask), crf.log_likelihood(emissions.float(), tags, mask),
                 *crf.viterbi_decode(emissions.float(), mask))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = (bf16_crf.log_partition(emissions, mask), bf16_crf.log_likelihood(emissions, tags, mask),
                   *bf16_crf.viterbi_decode(emissions, mask))
    for result, expected in zip(results, reference):
        assert result.dtype == expected.dtype
        assert torch.equal(result, expected)
    assert results[0].dtype == torch.float32 and results[2].dtype == torch.long


@pytest.mark.skipif(
    not (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
    reason="this CPU has no native bf16 (AVX512-BF16/AMX): the emission layer's bf16 matmul would only be emulated",
)
def test_under_bf16_autocast_a_linear_emission_layer_stays_close_to_float32():
    torch.manual_seed(9)
    layer = torch.nn.Linear(16, 4)
    crf = random_crf(4, bio_constraints(BIO_LABELS), seed=9)
    states = torch.randn(len(LENGTHS), max(LENGTHS), 16)
    _, mask = random_batch(4)
    tags = torch.tensor([[0, 1, 2, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 3, 0, 0]]).masked_fill(~mask, -100)
    fp32 = crf.log_likelihood(layer(states), tags, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emissions = layer(states)
        assert emissions.dtype == torch.bfloat16
        bf16 = crf.log_likelihood(emissions, tags, mask)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, fp32, atol=0.1, rtol=0.02)


def test_bad_inputs_raise_clear_errors():
    crf = LinearChainCRF(3)
    emissions, mask = random_batch(3, lengths=[2, 3])
    with pytest.raises(ValueError, match="compacted"):
        crf.log_partition(emissions, torch.tensor([[True, False, True], [True, True, True]]))
    with pytest.raises(ValueError, match=r"tags inside the mask must be in 0\.\.2"):
        crf.log_likelihood(emissions, torch.tensor([[0, -100, 0], [0, 1, 2]]), mask)
    with pytest.raises(ValueError, match=r"emissions must be \[batch, length, 3\]"):
        crf.viterbi_decode(emissions[..., :2], mask)
    with pytest.raises(ValueError, match="allowed_transitions: a bool tensor of shape"):
        LinearChainCRF(3, torch.ones(2, 2, dtype=torch.bool))


# ---- word positions ----------------------------------------------------------------------------------------------

# [CLS] w1 w2a w2b w3 [SEP] pad pad | [CLS] w1a w1b [SEP] pad... | [CLS] [SEP] (no words) | w1 w2 (no specials, no pad)
TOKEN_LABELS = torch.tensor([
    [-100, 3, 1, -100, 2, -100, -100, -100],
    [-100, 0, -100, -100, -100, -100, -100, -100],
    [-100, -100, -100, -100, -100, -100, -100, -100],
    [2, 1, 0, 1, 1, 0, 2, 3],
])
WORD_LABELS = [[3, 1, 2], [0], [], [2, 1, 0, 1, 1, 0, 2, 3]]


def test_compact_and_scatter_round_trip_over_padding_and_continuation_subtokens():
    word_starts = TOKEN_LABELS != -100  # the first subtoken of each word carries its label
    index, mask = compact_word_positions(word_starts)
    assert index.shape == mask.shape == (4, 8) and index.dtype == torch.long
    assert [row[m].tolist() for row, m in zip(gather_word_positions(TOKEN_LABELS, index), mask)] == WORD_LABELS
    assert mask.sum(dim=1).tolist() == [3, 1, 0, 8]
    assert index[0, :3].tolist() == [1, 2, 4] and index[~mask].eq(0).all()

    emissions = torch.randn(4, 8, 5)
    word_emissions = gather_word_positions(emissions, index)
    assert word_emissions.shape == (4, 8, 5)
    assert torch.equal(word_emissions[0, :3], emissions[0, [1, 2, 4]])

    # round trip: word-level tags back at their token positions, -100 everywhere else (position 0 of the last row
    # is a word start next to padding entries that also point at 0: they must not overwrite it)
    word_tags = gather_word_positions(TOKEN_LABELS, index).masked_fill(~mask, -100)
    assert torch.equal(scatter_word_tags(word_tags, index, mask, 8), TOKEN_LABELS)


def test_crf_over_compacted_words_ignores_continuation_subtokens_and_padding():
    """The model contract: transitions run over word starts only, so what sits at other positions never matters."""
    word_starts = TOKEN_LABELS != -100
    index, mask = compact_word_positions(word_starts)
    crf = random_crf(4, bio_constraints(BIO_LABELS), seed=10)
    emissions = torch.randn(4, 8, 4)
    noisy = emissions.clone()
    noisy[~word_starts] = 50 * torch.randn(int((~word_starts).sum()), 4)

    gold = gather_word_positions(TOKEN_LABELS, index)
    results = []
    for token_emissions in (emissions, noisy):
        word_emissions = gather_word_positions(token_emissions, index)
        tags, _ = crf.viterbi_decode(word_emissions, mask)
        results.append((crf.log_likelihood(word_emissions, gold, mask), scatter_word_tags(tags, index, mask, 8)))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    decoded = results[0][1]
    assert decoded.shape == TOKEN_LABELS.shape and torch.equal(decoded == -100, TOKEN_LABELS == -100)
    assert results[0][0][2] == 0  # the row without words

    # the same words in a single-row batch (no padding at all) score the same
    alone, alone_mask = compact_word_positions(word_starts[:1, :5])
    single = crf.log_likelihood(gather_word_positions(emissions[:1, :5], alone),
                                gather_word_positions(TOKEN_LABELS[:1, :5], alone), alone_mask)
    torch.testing.assert_close(single, results[0][0][:1])


# ---- inside a PreTrainedModel ------------------------------------------------------------------------------------

TASKS = [{"name": "ner", "type": "token_classification", "labels": BIO_LABELS}]


class WithCRF(MultiTaskModel):
    """A MultiTaskModel with a CRF beside its heads and our `_init_weights` unchanged."""

    def __init__(self, config):
        super().__init__(config)
        self.crf = LinearChainCRF(len(BIO_LABELS), *bio_constraints(BIO_LABELS))
        self.post_init()


class WithCRFInit(WithCRF):
    """The one-line extension of `_init_weights` a model needs for `from_pretrained` (see LinearChainCRF)."""

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LinearChainCRF):
            module.reset_parameters()


def crf_config():
    return MultiTaskConfig(encoder=tiny_encoder_config(vocab_size=99).to_dict(), tasks=TASKS)


def test_post_init_keeps_the_crf_initialisation():
    model = WithCRF(crf_config())
    for name in ("start_transitions", "end_transitions", "transitions"):
        assert torch.equal(getattr(model.crf, name), torch.zeros_like(getattr(model.crf, name))), name
    expected_transitions, expected_starts = bio_constraints(BIO_LABELS)
    assert torch.equal(model.crf.allowed_transitions, expected_transitions)
    assert torch.equal(model.crf.allowed_starts, expected_starts)
    crf_keys = sorted(key for key in model.state_dict() if key.startswith("crf."))
    assert crf_keys == ["crf.end_transitions", "crf.start_transitions", "crf.transitions"]  # buffers are not saved


def test_from_pretrained_loads_the_scores_and_rebuilds_the_constraints(tmp_path):
    model = WithCRFInit(crf_config())
    with torch.no_grad():
        model.crf.transitions.fill_(0.5)
        model.crf.start_transitions[1] = 2.0
    model.save_pretrained(tmp_path / "saved")
    loaded = WithCRFInit.from_pretrained(tmp_path / "saved")
    assert torch.equal(loaded.crf.transitions, torch.full((4, 4), 0.5))
    assert loaded.crf.start_transitions.tolist() == [0.0, 2.0, 0.0, 0.0]
    expected_transitions, expected_starts = bio_constraints(BIO_LABELS)
    assert torch.equal(loaded.crf.allowed_transitions, expected_transitions)
    assert torch.equal(loaded.crf.allowed_starts, expected_starts)

    # a checkpoint without CRF scores (a model trained before the CRF was switched on) is refused by name, never
    # loaded with leftover memory as its scores
    MultiTaskModel(crf_config()).save_pretrained(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"weights missing from the checkpoint: \['crf.end_transitions'"):
        WithCRFInit.from_pretrained(tmp_path / "plain")
