"""qwen35-tune: declarative fine-tuning and domain adaptation for Qwen3.5 (dense, MoE, vision)."""

__version__ = "0.1.0"
