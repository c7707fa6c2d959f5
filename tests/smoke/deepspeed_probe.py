"""One rank of a 2-process DeepSpeed run on CPU (gloo): load a bf16 checkpoint the way ``train`` does under
``accelerate launch`` with a ZeRO config (HfDeepSpeedConfig alive, so ZeRO-3 loads through zero.Init), build the
engine with bf16 on, and write what the fp32 parameters became, what was logged and the masters' dtype to JSON.

  python -m torch.distributed.run --nproc_per_node 2 tests/smoke/deepspeed_probe.py STAGE full|frozen CKPT OUT.json

``frozen``: the fp32 parameters are frozen as in a LoRA run; ``full``: everything trains. Used by
tests/smoke/test_deepspeed_fp32_params.py.
"""

from __future__ import annotations

import json
import logging
import sys

import torch


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def main(stage: int, mode: str, checkpoint: str, out: str) -> None:
    import deepspeed
    from safetensors.torch import load_file
    from transformers.integrations import HfDeepSpeedConfig

    from qwen35_tune.models.fp32_params import restore_after_engine, restore_fp32_params
    from qwen35_tune.models.load import load_model
    from qwen35_tune.registry import spec_for

    logs = _Collect()
    logging.getLogger("qwen35_tune").addHandler(logs)
    logging.getLogger("qwen35_tune").setLevel(logging.INFO)
    deepspeed.init_distributed(dist_backend="gloo")
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "bf16": {"enabled": True},
              "zero_optimization": {"stage": stage}, "zero_allow_untested_optimizer": True}  # fmt: skip
    keep = HfDeepSpeedConfig(config)  # noqa: F841  (while alive, from_pretrained uses zero.Init for stage 3)
    model = load_model(checkpoint, "bfloat16")
    suffixes = spec_for(model.config.model_type).fp32_params
    restore_fp32_params(model, checkpoint, suffixes)  # what prepare_model does
    for name, param in model.named_parameters():
        param.requires_grad_(mode == "full" or not name.endswith(suffixes))
    trained = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=trained, config=config,
                                      optimizer=torch.optim.SGD(trained, lr=0.0))  # fmt: skip
    restore_after_engine(engine.module, checkpoint, suffixes)  # what the trainer callback does at train begin
    stored = load_file(f"{checkpoint}/model.safetensors")
    islands = [(n, p) for n, p in engine.module.named_parameters() if n.endswith(suffixes)]
    with deepspeed.zero.GatheredParameters([p for _, p in islands], enabled=stage == 3):
        params = {n: {"dtype": str(p.dtype).removeprefix("torch."),
                      "equal_checkpoint": bool(torch.equal(p.detach().cpu().float(), stored[n].float()))}
                  for n, p in islands}  # fmt: skip
    report = {"params": params, "logs": logs.messages,
              "master_dtypes": sorted({str(t.dtype).removeprefix("torch.") for t in _masters(engine.optimizer)})}
    if torch.distributed.get_rank() == 0:
        with open(out, "w") as handle:
            json.dump(report, handle, indent=2)


def _masters(optimizer) -> list:
    """The optimizer's own copies of the trainable weights (ZeRO-1/2 and ZeRO-3 name them differently)."""
    for attribute in ("single_partition_of_fp32_groups", "fp32_partitioned_groups_flat"):
        groups = getattr(optimizer, attribute, None)
        if groups:
            return list(groups)
    return []


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4])
