"""Peak memory of the chunked cross-entropy (forward + backward) vs the size of the materialised logits.

    python benchmarks/chunked_loss_memory.py [--tokens 8192] [--vocab 248320] [--hidden 64]

CPU, fp32. The peak is the process's resident high-water mark (VmHWM, reset through /proc/self/clear_refs)
above what the inputs already use; the materialised figure is tokens x vocab x 4 bytes, the logits tensor alone
(a full-logits loss also keeps its log-softmax and gradient of the same size, so this understates it).
Also checks the chunked loss against the full one on a slice small enough to materialise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from chunked_loss import chunked_cross_entropy  # the sibling file (run as a script from anywhere)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=8192)
    parser.add_argument("--vocab", type=int, default=248320)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab-chunk", type=int, default=4096, help="vocabulary columns per tile")
    args = parser.parse_args()
    torch.manual_seed(0)
    hidden = torch.randn(1, args.tokens, args.hidden, requires_grad=True)
    weight = (0.05 * torch.randn(args.vocab, args.hidden)).requires_grad_()
    labels = torch.randint(0, args.vocab, (1, args.tokens))

    small = slice(0, 512)
    ref = F.cross_entropy(hidden[0, :511] @ weight.T, labels[0, 1:512])
    ours = chunked_cross_entropy(hidden[:, small], weight, labels[:, small])
    print(f"equality check (512 tokens): |chunked - full| = {abs(ours.item() - ref.item()):.2e}")
    del ref, ours

    Path("/proc/self/clear_refs").write_text("5")
    base = _status("VmRSS")
    started = time.perf_counter()
    loss = chunked_cross_entropy(hidden, weight, labels, vocab_chunk=args.vocab_chunk)
    loss.backward()
    seconds = time.perf_counter() - started
    peak = _status("VmHWM") - base
    logits_bytes = args.tokens * args.vocab * 4
    print(f"tokens {args.tokens}  vocab {args.vocab}  hidden {args.hidden}  vocab chunk {args.vocab_chunk}  "
          f"loss {loss.item():.4f}  ({seconds:.1f} s)")
    print(f"materialised fp32 logits: {logits_bytes / 2**30:.2f} GiB")
    ratio = peak / logits_bytes
    print(f"chunked peak above inputs (fwd+bwd): {peak / 2**30:.3f} GiB  ratio {ratio:.3f} (goal <= 0.25)")


if __name__ == "__main__":
    main()
