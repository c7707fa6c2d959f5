"""Data cards: one YAML per dataset (source, format, columns, license); `load_card` reads and validates one."""

from qwen35_tune.cards.load import load_card
from qwen35_tune.cards.schema import DataCard, HubSource, LocalSource

__all__ = ["DataCard", "HubSource", "LocalSource", "load_card"]
