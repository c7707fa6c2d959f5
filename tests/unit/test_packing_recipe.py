"""Recipe keys for packing: train.packing_length and the packing-vs-length-grouped-padding choice."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qwen35_tune.recipe.schema import TrainSection


def test_packing_length_defaults_to_max_length_and_must_hold_it():
    assert TrainSection(packing=True).packing_length is None
    assert TrainSection(packing=True, max_length=512, packing_length=4096).packing_length == 4096
    with pytest.raises(ValidationError, match="at least train.max_length"):
        TrainSection(packing=True, max_length=512, packing_length=256)


def test_packing_length_without_packing_is_a_mistake():
    with pytest.raises(ValidationError, match="only used with train.packing"):
        TrainSection(packing_length=4096)


def test_packing_and_length_grouping_are_alternatives():
    assert TrainSection(train_sampling_strategy="group_by_length").train_sampling_strategy == "group_by_length"
    with pytest.raises(ValidationError, match="choose one"):
        TrainSection(packing=True, train_sampling_strategy="group_by_length")
