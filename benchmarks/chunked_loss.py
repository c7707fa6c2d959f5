"""Token-level cross-entropy over a large vocabulary without materialising the (tokens x vocab) logits.

Training already gets this from TRL: ``SFTTrainer`` installs ``trl.trainer.utils.add_fused_lm_head``, whose
``ChunkedLogProbFunction`` projects hidden states through the LM head in (4096 tokens x 32768 vocab) tiles with an
online log-sum-exp (Triton on GPU, torch elsewhere), and divides the summed loss by ``num_items_in_batch``: the
real target tokens of the whole effective batch (all accumulation steps and ranks, counted by transformers'
Trainer on the shifted labels). This helper exposes that same function for direct use, so the equivalence test
(``tests/unit/test_packing_loss.py``) and ``chunked_loss_memory.py`` can hold it to the full cross-entropy and to its
memory bound; training never imports it, so it lives here rather than in the package. (Liger's fused linear
cross-entropy is refused by TRL's SFTTrainer, which patches the same forward.)
"""

from __future__ import annotations

# Vocabulary columns per tile; TRL's SFTTrainer uses the same width.
VOCAB_CHUNK = 32768


def chunked_cross_entropy(hidden, weight, labels, num_items_in_batch=None, bias=None, vocab_chunk: int = VOCAB_CHUNK):
    """Mean next-token cross-entropy of ``hidden @ weight.T`` against ``labels`` (shifted inside, -100 ignored).

    ``hidden`` is (batch, seq, hidden), ``labels`` (batch, seq). The sum is divided by ``num_items_in_batch`` when
    given (the effective batch's target-token count), else by this batch's own count.
    """
    import torch
    from trl.kernels.chunked_logprob import ChunkedLogProbFunction

    hidden, labels = hidden[:, :-1], labels[:, 1:]
    mask = labels != -100
    log_probs = ChunkedLogProbFunction.apply(
        hidden[mask], weight, bias, labels[mask], 1.0, vocab_chunk, None, 1.0, ()
    )[0]
    count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    return -log_probs.sum() / torch.as_tensor(count, device=log_probs.device)


def count_target_tokens(batches) -> int:
    """Real target tokens across micro-batches (shifted labels, as the loss sees them): the loss denominator."""
    return int(sum((b["labels"][..., 1:] != -100).sum() for b in batches))
