"""Evaluation: generation, answer checking, suites and the runner behind `qwen35-tune eval`."""
