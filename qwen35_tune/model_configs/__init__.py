"""Shipped config.json numbers of the real Qwen3.5 checkpoints, read by the memory planner offline."""
