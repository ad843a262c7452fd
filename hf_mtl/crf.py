"""A linear-chain CRF over word positions, in plain torch, and the tag-scheme constraints it decodes under.

Hub-safe (torch only): `save_pretrained` copies it beside the weights with the model file that imports it.
"""

import torch
from torch import nn


# Score of a transition or start that the tag scheme forbids. Finite on purpose: a gold path that breaks the
# constraints then costs a large finite loss instead of inf/NaN. Far below any sum of emission scores a trained
# head gives a sentence, so such a path has probability 0 in float32 and Viterbi never picks it.
DISALLOWED_SCORE = -1e4


class LinearChainCRF(nn.Module):
    """
    Linear-chain conditional random field over a compacted sequence of positions (one per word: see
    `compact_word_positions`), in plain torch.

    Parameters: `start_transitions [T]`, `end_transitions [T]` and `transitions [T, T]` (from-tag x to-tag), all
    initialised to zeros: the untrained CRF then scores a path by its emissions alone (without constraints exactly
    like a softmax head, its NLL the sum of the words' cross-entropies), and building one draws no random numbers
    (the other heads' initialisation does not change). Emissions break the symmetry, so zeros train like any start.

    `allowed_transitions [T, T]` / `allowed_starts [T]` (e.g. from `bio_constraints`) are kept as non-persistent
    buffers (never saved: rebuilt from the label list at every load) and applied as a score of `DISALLOWED_SCORE`.
    A copy is kept as plain Python data so that `reset_parameters` can rebuild the buffers after
    `PreTrainedModel.from_pretrained`, which builds the model on the meta device and re-creates non-persistent
    buffers empty.

    Every method takes a compacted `mask [B, L]` (row b's True entries are positions 0..len_b-1), computes in
    float32 whatever the autocast context, is vectorised over the batch (a loop over positions only), and gives
    0 for a row of length 0.
    """

    def __init__(
        self,
        num_tags: int,
        allowed_transitions: torch.BoolTensor | None = None,
        allowed_starts: torch.BoolTensor | None = None,
    ):
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"LinearChainCRF needs at least 1 tag, got {num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))
        self._allowed_transitions = self._as_python(allowed_transitions, (num_tags, num_tags), "allowed_transitions")
        self._allowed_starts = self._as_python(allowed_starts, (num_tags,), "allowed_starts")
        transitions_mask, starts_mask = self.constraint_masks()
        self.register_buffer("allowed_transitions", transitions_mask, persistent=False)
        self.register_buffer("allowed_starts", starts_mask, persistent=False)

    @staticmethod
    def _as_python(mask, shape, name):
        if mask is None:
            return None
        if not isinstance(mask, torch.Tensor):  # not a bare as_tensor: inside a meta-device context it would move a tensor
            mask = torch.as_tensor(mask, device="cpu")
        if tuple(mask.shape) != shape or mask.dtype != torch.bool:
            raise ValueError(f"LinearChainCRF {name}: a bool tensor of shape {list(shape)} is required, "
                             f"got {mask.dtype} {list(mask.shape)}")
        if mask.is_meta:
            raise ValueError(f"LinearChainCRF {name}: build it on the CPU (device='cpu'), not on the meta device")
        return mask.tolist()

    def constraint_masks(self) -> tuple:
        """`(allowed_transitions [T, T], allowed_starts [T])` as bool tensors rebuilt from the constructor's masks."""
        num_tags = self.num_tags
        transitions = (
            torch.tensor(self._allowed_transitions, dtype=torch.bool)
            if self._allowed_transitions is not None
            else torch.ones(num_tags, num_tags, dtype=torch.bool)
        )
        starts = (
            torch.tensor(self._allowed_starts, dtype=torch.bool)
            if self._allowed_starts is not None
            else torch.ones(num_tags, dtype=torch.bool)
        )
        return transitions, starts

    @torch.no_grad()
    def reset_parameters(self):
        """Zeros for the scores and the constraint buffers rebuilt; for `_init_weights`. Under transformers'
        `initialize_weights`, `nn.init.zeros_` skips parameters that were loaded from a checkpoint."""
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.zeros_(parameter)
        transitions, starts = self.constraint_masks()
        self.allowed_transitions.copy_(transitions)
        self.allowed_starts.copy_(starts)

    def extra_repr(self):
        constrained = self._allowed_transitions is not None or self._allowed_starts is not None
        return f"num_tags={self.num_tags}, constrained={constrained}"

    # -- scores in float32 --------------------------------------------------------------------------------------

    def _scores(self):
        """(start [T], transitions [T, T], end [T]) in float32 with the constraints applied."""
        start = self.start_transitions.float().masked_fill(~self.allowed_starts, DISALLOWED_SCORE)
        transitions = self.transitions.float().masked_fill(~self.allowed_transitions, DISALLOWED_SCORE)
        return start, transitions, self.end_transitions.float()

    def _check(self, emissions, mask):
        """Row lengths `[B]` after checking shapes and that the mask is a left-aligned prefix."""
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(f"LinearChainCRF: emissions must be [batch, length, {self.num_tags}], got {list(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"LinearChainCRF: mask {list(mask.shape)} does not match emissions {list(emissions.shape)}")
        mask = mask.to(device=emissions.device, dtype=torch.bool)
        lengths = mask.sum(dim=1)
        positions = torch.arange(mask.shape[1], device=mask.device)
        if not torch.equal(mask, positions < lengths.unsqueeze(1)):
            raise ValueError("LinearChainCRF: the mask must be compacted (each row's True entries first); "
                             "see compact_word_positions")
        return mask, lengths

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.LongTensor, mask: torch.BoolTensor) -> torch.Tensor:
        """log p(tags | emissions) per row `[B]` (float32); tags outside the mask are ignored (may be -100)."""
        mask, _ = self._check(emissions, mask)
        tags = tags.to(emissions.device)
        if bool(((tags < 0) | (tags >= self.num_tags))[mask].any()):
            raise ValueError(f"LinearChainCRF: tags inside the mask must be in 0..{self.num_tags - 1}")
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            return self._path_score(emissions.float(), tags, mask) - self.log_partition(emissions, mask)

    def _path_score(self, emissions, tags, mask):
        start, transitions, end = self._scores()
        zero = emissions.new_zeros(())
        if emissions.shape[1] == 0:
            return emissions.new_zeros(emissions.shape[0])
        tags = tags.masked_fill(~mask, 0)
        # `where`, not a product with the mask: a non-finite score outside the mask must not turn into NaN.
        score = torch.where(mask, emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1), zero).sum(dim=1)
        score = score + torch.where(mask[:, 0], start[tags[:, 0]], zero)
        if tags.shape[1] > 1:
            score = score + torch.where(mask[:, 1:], transitions[tags[:, :-1], tags[:, 1:]], zero).sum(dim=1)
        lengths = mask.sum(dim=1)
        last_tags = tags.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
        return score + torch.where(lengths > 0, end[last_tags], zero)

    def log_partition(self, emissions: torch.Tensor, mask: torch.BoolTensor) -> torch.Tensor:
        """log Σ over all tag paths of exp(score) per row `[B]` (forward algorithm, float32)."""
        mask, lengths = self._check(emissions, mask)
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            emissions = emissions.float()
            start, transitions, end = self._scores()
            if emissions.shape[1] == 0:
                return emissions.new_zeros(emissions.shape[0])
            alpha = start + emissions[:, 0]  # [B, T]: log-sum of the paths ending in each tag
            for position in range(1, emissions.shape[1]):
                step = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, position].unsqueeze(1), dim=1)
                alpha = torch.where(mask[:, position].unsqueeze(1), step, alpha)
            total = torch.logsumexp(alpha + end, dim=1)
            return torch.where(lengths > 0, total, torch.zeros_like(total))

    @torch.no_grad()
    def viterbi_decode(self, emissions: torch.Tensor, mask: torch.BoolTensor) -> tuple:
        """Best path per row: `(tags [B, L] long, -100 after each row's length; its scores [B] float32)`."""
        mask, lengths = self._check(emissions, mask)
        batch_size, length = emissions.shape[:2]
        device = emissions.device
        tags = torch.full((batch_size, length), -100, dtype=torch.long, device=device)
        if length == 0:
            return tags, torch.zeros(batch_size, device=device)
        with torch.autocast(device_type=device.type, enabled=False):
            emissions = emissions.float()
            start, transitions, end = self._scores()
            score = start + emissions[:, 0]
            identity = torch.arange(self.num_tags, device=device).expand(batch_size, -1)
            backpointers = []
            for position in range(1, length):
                best, best_previous = (score.unsqueeze(2) + transitions).max(dim=1)
                keep = mask[:, position].unsqueeze(1)
                score = torch.where(keep, best + emissions[:, position], score)
                # Past a row's end the best tag is carried forward unchanged, so backtracking passes through.
                backpointers.append(torch.where(keep, best_previous, identity))
            best_score, current = (score + end).max(dim=1)
            path = [current]
            for pointers in reversed(backpointers):
                current = pointers.gather(1, current.unsqueeze(1)).squeeze(1)
                path.append(current)
            path = torch.stack(path[::-1], dim=1)
        tags = torch.where(mask, path, tags)
        return tags, torch.where(lengths > 0, best_score, torch.zeros_like(best_score))

    @torch.no_grad()
    def decode_word_starts(self, logits: torch.Tensor, word_start_mask: torch.Tensor) -> torch.LongTensor:
        """Token-level `logits [B, S, T]` -> tag ids `[B, S]`: Viterbi over the positions of `word_start_mask` (each
        word's first sub-token), -100 elsewhere. The one decoding of every backend (torch head, ONNX, OpenVINO)."""
        index, mask = compact_word_positions(word_start_mask.to(logits.device).bool())
        tags, _ = self.viterbi_decode(gather_word_positions(logits, index), mask)
        return scatter_word_tags(tags, index, mask, logits.shape[1])


def crf_for_task(task: dict) -> LinearChainCRF:
    """The CRF of a token task dict with `crf: true`: one tag per label, constrained to the valid paths of its
    `tag_format` (BIO, BIOES; plain tags have none) unless `bio_constraints` is false."""
    tag_format = task.get("tag_format", "BIO")
    constrained = task.get("bio_constraints", True) and tag_format != "plain"
    build = bioes_constraints if tag_format == "BIOES" else bio_constraints
    constraints = build(task["labels"]) if constrained else (None, None)
    return LinearChainCRF(len(task["labels"]), *constraints)


def bio_constraints(labels: list) -> tuple:
    """
    `(allowed_transitions [T, T], allowed_starts [T])` bool masks for a BIO label list: `I-X` only after `B-X` or
    `I-X` and never first; `O` and `B-*` anywhere. A label that is not `O`, `B-*` or `I-*` is unconstrained itself
    (it may start and follow anything), though an `I-X` still cannot follow it. Built on the CPU explicitly so
    that it also works inside the meta-device context `from_pretrained` builds models in.
    """
    num_tags = len(labels)
    allowed_transitions = torch.ones(num_tags, num_tags, dtype=torch.bool, device="cpu")
    allowed_starts = torch.ones(num_tags, dtype=torch.bool, device="cpu")
    for to_index, label in enumerate(labels):
        if not (isinstance(label, str) and label.startswith("I-")):
            continue
        entity = label[2:]
        allowed_starts[to_index] = False
        for from_index, previous in enumerate(labels):
            allowed_transitions[from_index, to_index] = previous in (f"B-{entity}", f"I-{entity}")
    return allowed_transitions, allowed_starts


def bioes_constraints(labels: list) -> tuple:
    """
    `(allowed_transitions [T, T], allowed_starts [T])` bool masks for a BIOES label list: after `B-X` or `I-X` only
    `I-X` or `E-X`; after `E-X`, `S-X`, `O` (or a label of another shape) anything but `I-*` and `E-*`; a path
    starts with `B-*`, `S-*` or `O`. No end constraint: a pipeline window may end inside an entity. Built on the
    CPU as `bio_constraints` is.
    """
    parts = [
        (label[0], label[2:]) if isinstance(label, str) and label[:2] in ("B-", "I-", "E-", "S-") else ("", label)
        for label in labels
    ]
    inside = [prefix in ("I", "E") for prefix, _ in parts]
    allowed_starts = torch.tensor([not flag for flag in inside], dtype=torch.bool, device="cpu").reshape(len(labels))
    allowed_transitions = torch.zeros(len(labels), len(labels), dtype=torch.bool, device="cpu")
    for from_index, (from_prefix, from_type) in enumerate(parts):
        for to_index, (_, to_type) in enumerate(parts):
            if from_prefix in ("B", "I"):
                allowed_transitions[from_index, to_index] = inside[to_index] and to_type == from_type
            else:
                allowed_transitions[from_index, to_index] = not inside[to_index]
    return allowed_transitions, allowed_starts


def compact_word_positions(word_start_mask: torch.BoolTensor) -> tuple:
    """
    `(index [B, Lw] long, mask [B, Lw] bool)`: row b's word-start (first subtoken) positions, in order and
    left-aligned, `Lw` the most words in a row; padding entries of `index` are 0 and masked out. Turn token-level
    values into word-level ones with `gather_word_positions`, and decoded word tags back with `scatter_word_tags`.
    """
    word_start_mask = word_start_mask.bool()
    counts = word_start_mask.sum(dim=1)
    num_words = int(counts.max()) if word_start_mask.numel() else 0
    # A stable sort on "not a word start" puts each row's word starts first, in their order.
    order = torch.sort((~word_start_mask).to(torch.uint8), dim=1, stable=True).indices[:, :num_words]
    mask = torch.arange(num_words, device=word_start_mask.device) < counts.unsqueeze(1)
    return order.masked_fill(~mask, 0), mask


def gather_word_positions(values: torch.Tensor, index: torch.LongTensor) -> torch.Tensor:
    """Token-level `values [B, S]` or `[B, S, T]` -> word-level `[B, Lw]` / `[B, Lw, T]` at `index`."""
    if values.dim() == 2:
        return values.gather(1, index)
    return values.gather(1, index.unsqueeze(-1).expand(-1, -1, values.shape[-1]))


def scatter_word_tags(
    word_tags: torch.LongTensor, index: torch.LongTensor, mask: torch.BoolTensor, sequence_length: int
) -> torch.LongTensor:
    """Word-level `word_tags [B, Lw]` back at their token positions `[B, sequence_length]`, -100 elsewhere: the
    shape of an argmax over token logits."""
    batch_size = word_tags.shape[0]
    tokens = torch.full((batch_size, sequence_length + 1), -100, dtype=torch.long, device=word_tags.device)
    # Masked-out entries go to a spare last column, so they can never overwrite a real position.
    target = index.masked_fill(~mask, sequence_length)
    tokens.scatter_(1, target, word_tags.long().masked_fill(~mask, -100))
    return tokens[:, :sequence_length]


__all__ = ["LinearChainCRF", "bio_constraints", "bioes_constraints", "compact_word_positions", "crf_for_task",
           "gather_word_positions", "scatter_word_tags"]
