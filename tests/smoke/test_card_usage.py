"""The model card's Usage snippet runs as written: the python block is taken from the exported README, REPO_ID is
pointed at the exported folder, and it is executed in-process on a dense merged folder, a vision merged folder (with
an image) and a vision adapter folder (on its base), in thinking and non-thinking mode."""

from __future__ import annotations

import io
import re
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from qwen35_tune.export.merge import export_adapter, merge_run
from qwen35_tune.export.usage import EXAMPLE_IMAGE
from tests.smoke.export_kit import make_adapter_run

pytestmark = pytest.mark.smoke
VISION_TARGETS = r".*language_model.*\.(q_proj|in_proj_z|up_proj)"  # as the registry's vision presets: text only


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_dense, tiny_vision) -> dict[str, Path]:
    """Folders as `merge` writes them, from runs whose adapters are saved as `train` saves them (CAUSAL_LM task)."""
    from PIL import Image
    from transformers import AutoProcessor

    tmp = tmp_path_factory.mktemp("usage")
    dense = make_adapter_run(tiny_dense, tmp / "dense", base_model="tiny://dense", task_type="CAUSAL_LM",
                             target_modules=["q_proj", "gate_proj"])
    vision = make_adapter_run(tiny_vision, tmp / "vision", base_model="tiny://vision", task_type="CAUSAL_LM",
                              target_modules=VISION_TARGETS)
    AutoProcessor.from_pretrained(tiny_vision).save_pretrained(vision / "adapter")  # train saves a vision processor
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp / "red.png")
    return {"dense": merge_run(dense, verify=False), "vision": merge_run(vision, verify=False),
            "adapter": export_adapter(vision), "image": tmp / "red.png"}


def run_usage(folder: Path, image: Path) -> tuple[dict, str]:
    """Execute the README's python block against ``folder``; returns its namespace and what it printed."""
    readme = (folder / "README.md").read_text()
    code = re.search(r"## Usage\n\n```python\n(.*?)```", readme, re.S).group(1)
    assert "REPO_ID" in code
    code = re.sub(r"max_new_tokens=\d+", "max_new_tokens=5", code.replace("REPO_ID", str(folder)))
    code = code.replace(EXAMPLE_IMAGE, str(image))  # offline: a local picture instead of the example URL
    namespace: dict = {}
    with redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, f"{folder}/README.md", "exec"), namespace)  # noqa: S102 - the snippet under test
    return namespace, printed.getvalue()


def _check_generated(namespace: dict, reader) -> None:
    inputs, output = namespace["inputs"], namespace["output"]
    assert output.shape[1] > inputs["input_ids"].shape[1]  # it generated
    prompt = reader.decode(inputs["input_ids"][0])
    assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # the last pass: thinking off


def test_dense_merged_card_snippet_generates(exported):
    namespace, printed = run_usage(exported["dense"], exported["image"])
    assert type(namespace["model"]).__name__ == "Qwen3_5ForCausalLM"
    _check_generated(namespace, namespace["tokenizer"])
    assert printed.count("\n") >= 2  # one reply per thinking mode


def test_vision_merged_card_snippet_generates_from_an_image(exported):
    namespace, _ = run_usage(exported["vision"], exported["image"])
    assert type(namespace["model"]).__name__ == "Qwen3_5ForConditionalGeneration"
    assert "pixel_values" in namespace["inputs"]  # the picture went in
    _check_generated(namespace, namespace["processor"])


def test_vision_adapter_card_snippet_puts_the_adapter_on_its_base(exported):
    from peft import PeftModel

    namespace, _ = run_usage(exported["adapter"], exported["image"])
    model = namespace["model"]
    assert isinstance(model, PeftModel)
    assert type(model.get_base_model()).__name__ == "Qwen3_5ForConditionalGeneration"
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the trained (random, non-zero) weights loaded
    assert "pixel_values" in namespace["inputs"]
    _check_generated(namespace, namespace["processor"])
