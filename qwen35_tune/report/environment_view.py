"""The environment section: what the run trained with (environment.json, recorded at its start), its code revision
and kernels (run_config.json), and how many processes trained (summary.json)."""

from __future__ import annotations


def environment_view(env: dict, config: dict, summary: dict) -> dict:
    kernels = config.get("kernels") or {}
    rows = [
        ("qwen35-tune", config.get("qwen35_tune_version") or (env.get("packages") or {}).get("qwen35-tune")),
        ("git revision", config.get("git_revision") or "unknown (not a git checkout)"),
        ("launch strategy", env.get("launch_strategy")),
        ("world size (processes)", summary.get("world_size", env.get("world_size"))),
        ("gradient accumulation steps", summary.get("gradient_accumulation_steps")),
        ("nodes", env.get("nodes")),
        ("devices", ", ".join(env.get("devices") or []) or ("CPU" if env else None)),
        ("CPU", summary.get("hardware") or env.get("processor")),
        ("CPU cores", env.get("cpus")),
        ("Python", env.get("python")),
        ("platform", env.get("platform")),
        ("recipe files", ", ".join(config.get("recipe_files") or []) or None),
        ("seed", config.get("seed")),
        *((f"kernel: {part}", impl) for part, impl in kernels.items()),
    ]
    packages = [(name, version or "not installed") for name, version in (env.get("packages") or {}).items()]
    return {"rows": [(k, str(v)) for k, v in rows if v not in (None, "")], "packages": packages,
            "recorded": bool(env), "recorded_at": env.get("recorded_at")}
