"""The ``qwen35-tune`` command line. Heavy libraries are imported inside each subcommand, so ``--help`` and
``validate`` stay instant and never import torch. Exit codes: 0 ok, 2 user error (no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from qwen35_tune import __version__
from qwen35_tune.errors import UserError

EXAMPLES = """\
examples:
  qwen35-tune train recipes/tiny/sft_lora.yaml                      # the tiny default, ~1 min on 2 CPU cores
  qwen35-tune train recipes/qwen3_5_9b/lora.yaml train.learning_rate=1e-4 --output-dir runs/my-9b
  qwen35-tune validate recipes/qwen3_5_35b_a3b/lora.yaml data.cards.0.weight=2
  qwen35-tune merge runs/my-9b                                      # adapter -> publishable merged folder
  qwen35-tune make-tiny dense ./tiny-qwen3.5                        # a tiny random checkpoint for your CI

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

    validate = sub.add_parser("validate", help="check a recipe and its data cards without training (instant)",
                              description="Validate a recipe, its extends chain, overrides and data cards; "
                              "reports every problem with file:line.")
    _add_recipe_args(validate)

    merge = sub.add_parser("merge", help="merge a run's adapter into its base model (verified)",
                           description="Merge a finished run's adapter into the base model, save it in the base "
                           "checkpoint's layout with tokenizer and chat template, and verify logits match.")
    merge.add_argument("run_dir", type=Path, help="a finished run directory")
    merge.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/merged)")
    merge.add_argument("--no-verify", action="store_true", help="skip the logits check against the adapter model")

    tiny = sub.add_parser("make-tiny", help="write a tiny random Qwen3.5 checkpoint (for CI and tests)",
                          description="Write a tiny, randomly initialised Qwen3.5 checkpoint of the real "
                          "architecture with an offline tokenizer and chat template.")
    tiny.add_argument("kind", choices=["dense", "moe", "vision", "moe-vision"])
    tiny.add_argument("out_dir", type=Path)
    tiny.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                      help="bfloat16 keeps A_log and the gated norm in fp32, like real checkpoints")
    return parser


def _print(message: str, error: bool = False) -> None:
    from rich.console import Console

    console = Console(stderr=error, highlight=False, soft_wrap=True)
    console.print(message, style="bold red" if error else None, markup=False)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(show_path=False, markup=False)], force=True)
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(args):
    from qwen35_tune.recipe import load_recipe

    return load_recipe(args.recipe, list(args.overrides))


def cmd_validate(args) -> int:
    recipe = _load(args)
    cards = ", ".join(card.name for _, card in recipe.card_pairs())
    _print(f"ok: {args.recipe} -> recipe '{recipe.name}' ({recipe.method.kind} on {recipe.model.name_or_path}; "
           f"data cards: {cards})")
    return 0


def _run_dir(args, recipe) -> Path:
    if args.output_dir:
        return args.output_dir
    if recipe.output_dir:
        return Path(recipe.output_dir)
    return Path("runs") / f"{recipe.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_train(args) -> int:
    recipe = _load(args)
    from qwen35_tune.train.sft import run_sft

    run_dir = _run_dir(args, recipe)
    summary = run_sft(recipe, run_dir)
    _print(f"done: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f} "
           f"in {summary['wall_seconds']:.1f}s; run directory: {run_dir}")
    if "merged_dir" in summary:
        _print(f"merged model: {summary['merged_dir']}")
    return 0


def cmd_merge(args) -> int:
    from qwen35_tune.export.merge import merge_run

    out = merge_run(args.run_dir, args.out, verify=not args.no_verify)
    _print(f"merged model: {out}")
    return 0


def cmd_make_tiny(args) -> int:
    from qwen35_tune.models.tiny import write_tiny_checkpoint

    out = write_tiny_checkpoint(args.kind, args.out_dir, dtype=args.dtype)
    _print(f"tiny {args.kind} checkpoint written to {out}")
    return 0


COMMANDS = {"train": cmd_train, "validate": cmd_validate, "merge": cmd_merge, "make-tiny": cmd_make_tiny}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Like parse_args, but KEY=VALUE overrides may also come after options (``--output-dir D a.b=1``)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    stray = [arg for arg in rest if arg.startswith("-") or "=" not in arg or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    _setup_logging(args.verbose)
    try:
        return COMMANDS[args.command](args)
    except UserError as exc:
        _print(f"error: {exc}", error=True)
        return 2
    except KeyboardInterrupt:
        _print("interrupted", error=True)
        return 130
    except Exception:  # an internal error: show the traceback so it can be reported
        import traceback

        traceback.print_exc()
        _print("internal error: please report it with the traceback above", error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
