"""The ``qwen35-tune`` command line. Heavy libraries are imported inside each subcommand, so ``--help`` and
``validate`` stay instant and never import torch. Exit codes: 0 ok, 2 user error (no traceback), 1 internal error.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from qwen35_tune.cli_parser import build_parser
from qwen35_tune.errors import UserError


def _print(message: str, error: bool = False) -> None:
    from rich.console import Console

    console = Console(stderr=error, highlight=False, soft_wrap=True)
    console.print(message, style="bold red" if error else None, markup=False)


def _setup_logging(verbose: bool) -> None:
    from qwen35_tune.terminal import setup_logging

    setup_logging(verbose)  # rich columns on a live terminal, plain lines in CI / nohup / SLURM logs
    # bitsandbytes >= 0.50 warns on import, on CPUs with AVX512-BF16, that an optional CPU 4-bit kernel from the Hub
    # ("kernels-community") is missing: nothing this project uses, and it printed on every command, LoRA runs included.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def _load(args):
    from qwen35_tune.recipe import load_recipe

    return load_recipe(args.recipe, list(args.overrides))


def cmd_validate(args) -> int:
    from qwen35_tune.recipe import load_recipe

    recipe = load_recipe(args.recipe, list(args.overrides), check_model=True)  # validate also checks the model is here
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
    from qwen35_tune.train.runner import check_stage

    recipe = _load(args)
    check_stage(recipe.stage)  # stage: sft | dpo | grpo; one this version cannot train yet is exit 2 here
    if args.launch:
        from qwen35_tune.launch import relaunch
        from qwen35_tune.train.strategy_checks import check_launch_strategy

        check_launch_strategy(recipe, args.launch)  # e.g. QLoRA under ZeRO-3: exit 2 before launching
        argv = ["-v"] * args.verbose + ["train", str(args.recipe), *args.overrides]
        argv += ["--output-dir", str(args.output_dir)] if args.output_dir else []
        argv += ["--overwrite"] if args.overwrite else []
        return relaunch(args.launch, args.num_processes, argv + (["--resume", args.resume] if args.resume else []))
    from qwen35_tune.train.runner import runner_for

    run = runner_for(recipe.stage)  # train/sft.py run_sft, train/dpo.py run_dpo, ...
    run_dir = _run_dir(args, recipe)
    if args.resume and not (args.output_dir or recipe.output_dir):
        raise UserError("--resume needs a fixed run directory: pass --output-dir (or set output_dir in the recipe)")
    summary = run(recipe, run_dir, resume=args.resume, overwrite=args.overwrite)
    if summary.get("preempted"):
        _print(f"preempted: checkpoint saved at step {summary['steps']}; continue with --resume auto "
               f"--output-dir {run_dir}")
        return 0
    _print(f"done: {summary['steps']} steps, {_loss_text(summary)} in {summary['wall_seconds']:.1f}s; "
           f"run directory: {run_dir}")
    if "merged_dir" in summary:
        _print(f"merged model: {summary['merged_dir']}")
    if "hub_repo_id" in summary:
        _print(f"published: https://huggingface.co/{summary['hub_repo_id']}")
    return 0


def _loss_text(summary: dict) -> str:
    """The loss part of the final line, whatever was logged (a 1-step run may log no per-step loss)."""
    def shown(value) -> str:
        return f"{value:.4f}" if isinstance(value, (int, float)) else "n/a"

    first, final, mean = summary.get("first_loss"), summary.get("final_loss"), summary.get("train_loss")
    if summary.get("eval_loss") is not None:  # held-out rows are evaluated by default (train.eval_strategy)
        return f"{_loss_text({**summary, 'eval_loss': None})}, eval loss {shown(summary['eval_loss'])}"
    if first is not None or final is not None:
        return f"loss {shown(first)} -> {shown(final)}"
    if mean is not None:
        return f"mean loss {shown(mean)} (no step reached train.logging_steps)"
    return "no loss logged"


def cmd_merge(args) -> int:
    from qwen35_tune.export.merge import merge_run

    out = merge_run(args.run_dir, args.out, verify=not args.no_verify, base=args.base, adapter_only=args.adapter_only,
                    qlora_base=args.qlora_base)
    _print(f"exported: {out}")
    return 0


def cmd_verify(args) -> int:
    from qwen35_tune.export.checkpoint import download_checkpoint
    from qwen35_tune.export.verify import verify_export

    report = verify_export(args.merged_dir, download_checkpoint(args.base, key="--base"), run_dir=args.run)
    diff = report.get("max_abs_logit_diff")
    _print(f"ok: {report['tensors']} tensors ({report['changed']} changed, {report['identical']} identical), "
           f"loads as {report['loaded_class']}" + (f", max |logit diff| {diff:.2e}" if diff is not None else ""))
    return 0


def cmd_publish(args) -> int:
    from qwen35_tune.export.publish import publish_folder

    files = publish_folder(args.folder, args.repo, private=args.private, dry_run=args.dry_run)
    if args.dry_run:
        _print("\n".join(f"{size:>14,d}  {name}" for name, size in files))
        _print(f"dry run: {len(files)} files would be uploaded to {args.repo}")
    else:
        _print(f"published {len(files)} files to https://huggingface.co/{args.repo}")
    return 0


def cmd_make_tiny(args) -> int:
    from qwen35_tune.models.tiny import write_tiny_checkpoint

    out = write_tiny_checkpoint(args.kind, args.out_dir, dtype=args.dtype)
    _print(f"tiny {args.kind} checkpoint written to {out}")
    return 0


def cmd_plan(args) -> int:
    from qwen35_tune.plan import format_plan, load_model_config, make_plan, parse_gpus

    recipe = _load(args)
    gpus = parse_gpus(args.gpus)
    plan = make_plan(recipe, load_model_config(recipe.model.name_or_path), gpus)
    _print(format_plan(plan, recipe.model.name_or_path))
    return 0


def cmd_launch(args) -> int:
    from qwen35_tune.launch import choose_strategy, render_sbatch, write_sbatch

    recipe = _load(args)
    run_dir = args.output_dir or Path(recipe.output_dir or Path("runs") / recipe.name)
    strategy, note = choose_strategy(recipe, args.strategy, args.nodes * args.gpus_per_node, args.gpu)
    if note:
        _print(note)
    script = render_sbatch(args.recipe, list(args.overrides), name=recipe.name, nodes=args.nodes,
                           gpus_per_node=args.gpus_per_node, strategy=strategy, output_dir=run_dir,
                           time_limit=args.time, partition=args.partition)
    _print(write_sbatch(args.out or run_dir / "train.sbatch", script))
    return 0


def cmd_doctor(args) -> int:
    import torch

    from qwen35_tune.doctor import doctor_lines, model_type_of

    model_type, attn, allow, packing = "qwen3_5", None, False, False
    if args.recipe:
        recipe = _load(args)
        model_type = model_type_of(recipe.model.name_or_path, recipe.model.revision)  # offline for shipped hub ids
        attn, allow, packing = recipe.model.attn_implementation, recipe.model.allow_slow_kernels, recipe.train.packing
    lines, code = doctor_lines(model_type, attn, allow, torch.cuda.is_available(), packing)
    for line in lines:
        _print(line)
    return code


def _recipe_tokenizer(recipe):
    from qwen35_tune.models.load import load_tokenizer, resolve_model_path

    template = Path(recipe.chat.template).read_text(encoding="utf-8") if recipe.chat.template else None
    return load_tokenizer(resolve_model_path(recipe.model.name_or_path), recipe.model.revision, template)


def cmd_preview(args) -> int:
    from rich.console import Console

    from qwen35_tune.data.preview import preview_renderables, preview_rows

    recipe = _load(args)
    tokenizer = _recipe_tokenizer(recipe)
    console = Console(highlight=False, soft_wrap=True)
    plain = not console.is_terminal or console.no_color  # CI logs: trained tokens marked with ⟦…⟧, not colour
    for renderable in preview_renderables(preview_rows(recipe, tokenizer, args.rows), tokenizer, plain=plain):
        console.print(renderable, markup=False)
    return 0


def cmd_data(args) -> int:
    from rich.console import Console

    from qwen35_tune.data.build import build_datasets
    from qwen35_tune.data.preview import bad_reasons_table, plot_lengths, stats_table

    recipe = _load(args)
    out = args.output_dir or Path("runs") / f"{recipe.name}-data"
    out.mkdir(parents=True, exist_ok=True)
    from qwen35_tune.models.load import resolve_model_path
    from qwen35_tune.models.processor import processor_for_run

    processor = processor_for_run(recipe, resolve_model_path(recipe.model.name_or_path))  # or NoProcessor: why none
    train_ds, eval_ds, stats = build_datasets(recipe, _recipe_tokenizer(recipe), out, processor=processor)
    png = plot_lengths(train_ds, eval_ds, recipe.train.max_length, out / "lengths.png")
    console = Console(highlight=False, width=max(Console().width, 140))  # the table has 14 columns
    console.print(stats_table(stats))
    if any(card["bad"] for card in stats["cards"]):
        console.print(bad_reasons_table(stats))
    _print(f"{stats['train_rows']} train rows, {stats['eval_rows']} eval rows; report: {out / 'data_stats.json'}, "
           f"{png}, {out / 'quarantine.jsonl'}")
    return 0


def cmd_eval(args) -> int:
    import json

    from qwen35_tune.eval.runner import evaluate

    modes = ("thinking", "non-thinking") if args.mode == "both" else (args.mode,)
    if args.limit is not None and args.limit <= 0:
        raise UserError("--limit must be a positive number of rows")
    path = evaluate(args.path, args.suite, card=args.card, limit=args.limit, modes=modes,
                    max_new_tokens=args.max_new_tokens, out=args.out, batch_size=args.batch_size)
    report = json.loads(path.read_text())
    for mode, metrics in report["modes"].items():
        shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k not in ("budget", "seconds")}
        _print(f"{report['suite']} ({mode}): " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                          for k, v in shown.items()))
    contamination = report.get("contamination") or {}
    if contamination.get("exact_duplicates") or contamination.get("ngram_overlapping"):
        _print(f"note: {contamination['exact_duplicates']} eval rows repeat a training row exactly, "
               f"{contamination['ngram_overlapping']} share most of their 8-grams with training rows (see {path})")
    _print(f"results: {path} and {path.with_suffix('').with_suffix('.samples.jsonl')}")
    return 0


def cmd_report(args) -> int:
    from qwen35_tune.report.page import write_comparison, write_report

    if len(args.run_dirs) == 1:
        path = write_report(args.run_dirs[0], args.out)
    else:
        path = write_comparison(args.run_dirs, args.out or Path("compare.html"))
    _print(f"report: {path}")
    return 0


def cmd_schema(args) -> int:
    from qwen35_tune.recipe.reference import select
    from qwen35_tune.recipe.reference_render import render

    docs, focus = select(args.section)
    print(render(docs, focus, args.format, head=not args.section), end="")
    return 0


def cmd_chat(args) -> int:
    from qwen35_tune.infer.chat import COMMANDS as CHAT_COMMANDS
    from qwen35_tune.infer.chat import ChatSession, run_repl
    from qwen35_tune.infer.source import open_model

    _check_decoding(args)
    model, tokenizer, what = open_model(args.path)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    thinking = None if args.thinking is None else args.thinking == "on"
    session = ChatSession(model, tokenizer, write, thinking=thinking, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, system=args.system)
    decoding = ("the checkpoint's generation settings" if args.temperature is None else
                "greedy" if args.temperature == 0 else f"sampling at temperature {args.temperature}")
    mode = {None: "the template's default", True: "on", False: "off"}[thinking]
    _print(f"chatting with {what}\nthinking: {mode}; decoding: {decoding}; up to {args.max_new_tokens} new tokens "
           f"per reply\ncommands: {'  '.join(CHAT_COMMANDS)}")
    return run_repl(session)


def _check_decoding(args) -> None:
    if args.max_new_tokens <= 0:
        raise UserError("--max-new-tokens must be a positive number of tokens")
    if args.temperature is not None and args.temperature < 0:
        raise UserError("--temperature must be 0 (greedy) or positive")
    if getattr(args, "batch_size", 1) <= 0:
        raise UserError("--batch-size must be positive")


def cmd_generate(args) -> int:
    from qwen35_tune.eval.generate import load_eval_model, load_eval_tokenizer
    from qwen35_tune.infer.batch import default_out, generate_file, read_prompt_rows, render_rows
    from qwen35_tune.infer.source import describe, find_source

    _check_decoding(args)
    out = args.out or default_out(args.prompts)
    if args.prompts.exists() and out.exists() and out.resolve() == args.prompts.resolve():
        raise UserError(f"--out {out} is the prompts file itself; choose another file")
    rows, problems = read_prompt_rows(args.prompts)  # before any load: a bad file is known at once
    source = find_source(args.path)
    tokenizer = load_eval_tokenizer(source)
    thinking = None if args.thinking is None else args.thinking == "on"
    rendered, refused = render_rows(tokenizer, rows, thinking, args.prompts)
    problems += refused
    for problem in problems[:20]:
        _print(f"skipped {problem}", error=True)
    if len(problems) > 20:
        _print(f"... and {len(problems) - 20} more bad rows", error=True)
    if not rendered:
        raise UserError(f"{args.prompts}: no usable rows (each line: {{\"prompt\": \"...\"}} or "
                        f"{{\"messages\": [...]}}, optional \"enable_thinking\": true|false)")
    _print(f"generating {len(rendered)} rows with {describe(source)}")
    counts = generate_file(load_eval_model(source), tokenizer, rendered, out, max_new_tokens=args.max_new_tokens,
                           batch_size=args.batch_size, temperature=args.temperature)
    _print(f"wrote {counts['rows']} rows to {out} ({counts['new_tokens']} new tokens; {counts['length']} stopped at "
           f"--max-new-tokens {args.max_new_tokens})" + (f"; {len(problems)} bad rows skipped" if problems else ""))
    return 0


COMMANDS = {
    "train": cmd_train, "validate": cmd_validate, "preview": cmd_preview, "data": cmd_data, "eval": cmd_eval,
    "merge": cmd_merge, "verify": cmd_verify, "publish": cmd_publish,
    "plan": cmd_plan, "launch": cmd_launch, "doctor": cmd_doctor, "make-tiny": cmd_make_tiny,
    "schema": cmd_schema, "report": cmd_report,
    "chat": cmd_chat, "generate": cmd_generate,
}


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
    except Exception as exc:  # an internal error: show the traceback so it can be reported
        if isinstance(exc, OSError):  # ...unless it is a full disk or a read-only output folder (the environment)
            from qwen35_tune.train.guards import describe_os_error

            message = describe_os_error(exc)
            if message is not None:
                _print(f"error: {message}", error=True)
                return 2
        import traceback

        traceback.print_exc()
        _print("internal error: please report it with the traceback above", error=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
