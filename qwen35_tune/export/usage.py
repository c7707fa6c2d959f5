"""The model card's "Usage" section: a Python snippet that loads the exported folder and chats with it.

Written for transformers 5, where ``apply_chat_template(..., return_tensors="pt")`` returns a ``BatchEncoding``
(``return_dict=True`` makes that explicit, and ``generate(**inputs)`` takes it), and for the class the weights were
saved as: a vision checkpoint (``...ForConditionalGeneration``) loads with ``AutoModelForImageTextToText``. Its
adapters too: ``AutoPeftModelForCausalLM`` builds the text-only ``Qwen3_5ForCausalLM`` from a vision base, whose
module names (``model.layers``) do not match the adapter's (``model.language_model.layers``), so the snippet loads
the base explicitly and puts the adapter on it with ``PeftModel``. The snippet shows thinking on and off.
"""

from __future__ import annotations

import json
from pathlib import Path

EXAMPLE_IMAGE = "https://huggingface.co/datasets/huggingface/documentation-images/resolve/main/pipeline-cat-chonk.jpeg"
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")


def is_vision_folder(folder: Path | None) -> bool:
    """Whether ``folder``'s config names a vision class (``...ForConditionalGeneration``)."""
    config = Path(folder) / "config.json" if folder is not None else None
    if config is None or not config.exists():
        return False
    return any("ConditionalGeneration" in a for a in json.loads(config.read_text()).get("architectures") or [])


def _has_processor(folder: Path) -> bool:
    return any((Path(folder) / name).exists() for name in PROCESSOR_FILES)


def _load_lines(vision: bool, adapter_base: str | None) -> list[str]:
    """Imports and the model load: the folder itself, or (adapter) its base with the adapter put on it."""
    auto = "AutoModelForImageTextToText" if vision else "AutoModelForCausalLM"
    if adapter_base is None:
        return [f"model = {auto}.from_pretrained(\"REPO_ID\", dtype=\"auto\", device_map=\"auto\")"]
    return [f"base = {auto}.from_pretrained({json.dumps(adapter_base)}, dtype=\"auto\", device_map=\"auto\")",
            "model = PeftModel.from_pretrained(base, \"REPO_ID\")  # the adapter on the base it was trained on"]


def usage_snippet(folder: Path, adapter_base: str | None = None, base_folder: Path | None = None) -> str:
    """The Usage section's code blocks for ``folder`` (an adapter when ``adapter_base``, the base's id, is given)."""
    vision = is_vision_folder(base_folder if adapter_base is not None else folder)
    images = vision and _has_processor(folder)
    auto = "AutoModelForImageTextToText" if vision else "AutoModelForCausalLM"
    reader, reader_class = ("processor", "AutoProcessor") if images else ("tokenizer", "AutoTokenizer")
    if images:
        content = ("[\n    {\"type\": \"image\", \"url\": \"" + EXAMPLE_IMAGE + "\"},\n"
                   "    {\"type\": \"text\", \"text\": \"What is in this picture?\"},\n]")
    else:
        content = "\"Hello! Who are you?\""
    hang = " " * len(f"    inputs = {reader}.apply_chat_template(")
    lines = [*(["from peft import PeftModel"] if adapter_base is not None else []),
             f"from transformers import {auto}, {reader_class}", "",
             *_load_lines(vision, adapter_base),
             f"{reader} = {reader_class}.from_pretrained(\"REPO_ID\")  # with the chat template it was trained with",
             f"messages = [{{\"role\": \"user\", \"content\": {content}}}]",
             "# enable_thinking=True: the reply reasons inside <think>...</think>, then answers; False: answer only",
             "for thinking in (True, False):",
             f"    inputs = {reader}.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,",
             f"{hang}enable_thinking=thinking, return_dict=True, return_tensors=\"pt\").to(model.device)",
             "    output = model.generate(**inputs, max_new_tokens=512)",
             f"    print({reader}.decode(output[0, inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))"]
    code = "```python\n" + "\n".join(lines) + "\n```\n"
    if adapter_base is None:
        code += "\n```bash\nvllm serve REPO_ID\n```\n"
    return code
