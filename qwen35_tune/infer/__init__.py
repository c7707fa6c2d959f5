"""Inference on a finished run or checkpoint: `qwen35-tune chat` (interactive) and `qwen35-tune generate` (a file)."""
