"""summary.json names the machine (CPU model and cores, GPU names and memory), the trainable parameters, the final
eval loss and the merged folder."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

from qwen35_tune import hardware
from qwen35_tune.train.run_summary import last_value, record_export, summary_facts

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
"""


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    assert hardware.cpu_model(tmp_path / "cpuinfo") == "Intel(R) Xeon(R) Platinum 8480+"
    assert hardware.cpu_model(tmp_path / "missing")  # platform's answer, never empty


def test_gpus_are_named_with_their_memory(monkeypatch):
    props = SimpleNamespace(name="NVIDIA H200", total_memory=150_119_301_120)
    cuda = SimpleNamespace(is_available=lambda: True, device_count=lambda: 2, get_device_properties=lambda i: props)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(hardware, "cpu_model", lambda: "AMD EPYC 9654")
    info = hardware.describe_hardware()
    assert info["gpus"] == [{"name": "NVIDIA H200", "memory_gib": 139.8}] * 2
    assert info["hardware"] == f"AMD EPYC 9654 ({info['cpu_cores']} cores); 2x NVIDIA H200 (139.8 GiB)"


def test_no_gpu_without_torch_or_cuda(monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert hardware.gpus() == []
    cuda = SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", SimpleNamespace(cuda=cuda))
    assert hardware.gpus() == []


def test_summary_facts_read_the_run(tmp_path):
    (tmp_path / "preflight.json").write_text(json.dumps({"total": {"params": 1000, "trainable": 150},
                                                         "trainable_percent": 15.0}))
    metrics = [{"step": 2, "loss": 3.0}, {"step": 2, "eval_loss": 2.5}, {"step": 4, "eval_loss": 2.0},
               {"step": 4, "train_loss": 2.8}]
    facts = summary_facts(tmp_path, metrics)
    assert (facts["eval_loss"], facts["trainable_params"], facts["trainable_percent"]) == (2.0, 150, 15.0)
    assert facts["cpu"] and facts["cpu_cores"] >= 1 and isinstance(facts["gpus"], list)
    assert last_value(metrics[:1], "eval_loss") is None
    assert summary_facts(tmp_path / "elsewhere", [])["trainable_params"] is None


def test_record_export_writes_the_merged_folder_into_summary_json(tmp_path):
    summary = {"name": "run", "steps": 3}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    record_export(tmp_path, summary, merged_dir=str(tmp_path / "merged"))
    assert json.loads((tmp_path / "summary.json").read_text())["merged_dir"] == str(tmp_path / "merged")
