"""DPO on the tiny model, checked against the formula: the loss TRL's trainer computes on a fixed batch of our rendered
pairs equals -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r))) computed here from full logits, where each
sequence log-probability sums exactly the answer tokens SFT would train (never a prompt token)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from qwen35_tune.data.preference_build import split_pair
from qwen35_tune.data.render import render_with_mask, trained_runs

pytestmark = pytest.mark.smoke

BETA = 0.3
PAIRS = [
    ([{"role": "user", "content": "What is 2 + 3?"}], "2 + 3 = 5.", "2 + 3 = 6, I think."),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Capital of France?"}],
     "Paris.", "Lyon."),
]


def _rows(tokenizer) -> tuple[list[dict], list[tuple[list[int], list[int]]]]:
    """Our rendered rows, and for each sequence (chosen first, then rejected) the SFT render's (ids, trained span)."""
    rows, sft = [], []
    for prompt, good, bad in PAIRS:
        sides = [{"messages": [*prompt, {"role": "assistant", "content": text}]} for text in (good, bad)]
        rendered = [render_with_mask(tokenizer, side, train_on="final_turn_only") for side in sides]
        row = split_pair(*rendered)
        rows.append({"prompt_ids": row.prompt_ids, "chosen_ids": row.chosen_ids, "rejected_ids": row.rejected_ids})
        sft.append([render_with_mask(tokenizer, side) for side in sides])
    ordered = [pair[0] for pair in sft] + [pair[1] for pair in sft]  # TRL's batch order: chosen, then rejected
    return rows, [(r.input_ids, trained_runs(r.labels)[-1]) for r in ordered]


def _trainer(tmp_path, model_path, tokenizer, rows, peft_config):
    from datasets import Dataset
    from trl import DPOConfig

    from qwen35_tune.models.load import load_model
    from qwen35_tune.train.preference_collator import build_preference_collator
    from qwen35_tune.train.trainer import QwenDPOTrainer

    args = DPOConfig(output_dir=str(tmp_path / "checkpoints"), per_device_train_batch_size=len(rows), beta=BETA,
                     report_to="none", use_cpu=True, bf16=False, remove_unused_columns=False,
                     activation_checkpointing=False, disable_tqdm=True, max_length=None)  # fmt: skip
    dataset = Dataset.from_dict({k: [r[k] for r in rows] for k in rows[0]})
    collator = build_preference_collator(None, dataset, None, tokenizer, None, args)
    trainer = QwenDPOTrainer(model=load_model(str(model_path), "float32"), args=args, train_dataset=dataset,
                             data_collator=collator, processing_class=tokenizer, peft_config=peft_config,
                             run_dir=tmp_path)  # fmt: skip
    return trainer, collator


def _sequence_logps(model, batch, scored) -> torch.Tensor:
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    token_logps = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    return (token_logps * scored[:, 1:]).sum(-1)


@pytest.fixture(scope="module")
def dense_trainer(tmp_path_factory, tiny_dense):
    """QwenDPOTrainer on the tiny dense model with a LoRA adapter initialised at random (so policy != reference)."""
    from peft import LoraConfig

    from qwen35_tune.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_dense))
    rows, sft = _rows(tokenizer)
    torch.manual_seed(0)
    peft = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False)
    trainer, collator = _trainer(tmp_path_factory.mktemp("dpo"), tiny_dense, tokenizer, rows, peft)
    return trainer, collator(rows), sft


def test_the_scored_tokens_are_exactly_the_answer_tokens_sft_trains(dense_trainer):
    _, batch, sft = dense_trainer
    for i, (ids, (start, end)) in enumerate(sft):
        n = len(ids[:end])
        assert batch["input_ids"][i, :n].tolist() == ids[:end]  # prompt + answer, as SFT renders the conversation
        scored = batch["completion_mask"][i].nonzero().flatten().tolist()
        assert scored == list(range(start, end))  # no prompt token, no padding, every answer token


def test_loss_equals_the_dpo_formula_from_sequence_log_probabilities(dense_trainer):
    trainer, batch, _ = dense_trainer
    model = trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch)).item()
    scored = batch["completion_mask"]
    policy = _sequence_logps(model, batch, scored)
    with model.disable_adapter():  # DPO's reference for a fresh LoRA adapter: the base, adapter off
        reference = _sequence_logps(model, batch, scored)
    n = len(PAIRS)
    logratio = policy - reference
    expected = -F.logsigmoid(BETA * (logratio[:n] - logratio[n:])).mean().item()
    assert abs(loss - expected) <= 1e-5, (loss, expected)
    assert abs(expected - 0.6931) > 1e-3  # the random adapter makes policy and reference differ
    logged = trainer._metrics["eval"]  # (the model is in eval mode: no dropout)
    assert logged["logps/chosen"][-1] == pytest.approx(policy[:n].mean().item(), abs=1e-4)
    assert logged["logps/rejected"][-1] == pytest.approx(policy[n:].mean().item(), abs=1e-4)
    # The check can tell: scoring one prompt token more (the one before each answer) changes the sequence
    # log-probabilities. (Not the sigmoid loss: a prompt token shared by both answers cancels in the difference of
    # their log-ratios, which is why the sequence log-probabilities are held to the hand computation above.)
    with_prompt = scored.clone()
    for row in with_prompt:
        row[row.nonzero()[0] - 1] = 1
    other_policy = _sequence_logps(model, batch, with_prompt)
    assert (other_policy - policy).abs().min().item() > 1e-2
    assert abs(other_policy[:n].mean().item() - logged["logps/chosen"][-1]) > 1e-2


def test_moe_keeps_the_router_aux_loss_on(tmp_path, tiny_moe):
    """As for SFT: the MoE config's router_aux_loss_coef weighs the load-balancing loss into DPO's."""
    from peft import LoraConfig

    from qwen35_tune.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_moe))
    rows, _ = _rows(tokenizer)
    trainer, collator = _trainer(tmp_path, tiny_moe, tokenizer, rows, LoraConfig(r=4, target_modules="all-linear"))
    coef = trainer.model.config.get_text_config().router_aux_loss_coef
    assert trainer.aux_loss_enabled and trainer.router_aux_loss_coef == coef > 0
    with torch.no_grad():
        trainer.compute_loss(trainer.model, collator(rows))
    assert trainer._metrics["train" if trainer.model.training else "eval"]["aux_loss"][-1] > 0
