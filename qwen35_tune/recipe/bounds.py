"""Upper bounds of recipe numbers: far beyond any real run, so a typo (`max_steps: 1e29`, `r: 80000`) or a value
that would ruin the run fails at validate with its key and line instead of hours later.

The lower bounds (positive counts, fractions below 1) sit with each field in schema.py; finiteness (no .inf or
.nan anywhere) comes from StrictModel.
"""

MAX_STEPS = 100_000_000  # optimizer, logging, save and eval steps: 1e8 steps is years of training
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536  # sequences per device, gradient accumulation steps, prompts generated together
MAX_TOKENS = 16_777_216  # 2**24 tokens per sequence / generation (Qwen3.5 reads 262k natively, ~1M with YaRN)
MAX_LEARNING_RATE = 1.0  # AdamW-style optimizers diverge long before this
MAX_WEIGHT_DECAY = 1.0  # decoupled decay of lr * wd per step; above 1 it erases the weights it regularises
MAX_LORA_RANK = 65_536  # above any hidden size: a larger rank adds nothing
MAX_LORA_ALPHA = 65_536
MAX_ROWS = 1_000_000_000_000
MAX_CARD_WEIGHT = 1_000_000.0  # relative mixture weight; larger ratios are a typo, not a mixture
MAX_PIXELS = 268_435_456  # 2**28 = 16384 x 16384 per image or frame
MAX_FRAMES = 10_000
MAX_FPS = 1_000.0
MAX_WORKERS = 256  # dataloader worker processes
MAX_SEED = 2**32 - 1  # numpy.random.seed's range; transformers.set_seed seeds numpy with it
MAX_NAME_LENGTH = 128  # the run name becomes a folder name (255 bytes at most on common file systems)
MAX_NGRAM = 1_000
MAX_AUX_LOSS_COEF = 1.0  # the router balancing loss should not outweigh the language-model loss
