"""Peak memory of opening a long video for training: decoding every frame to an array, then sampling (what the data
path did before), vs keeping only the sampled frames while decoding (``data.media.open_video`` now).

    python benchmarks/video_decode_memory.py [--seconds 60] [--width 640] [--height 480] [--rate 30]

Writes a synthetic clip (mpeg4, moving noise so frames differ), then opens it in a fresh process per strategy
(fps 2, max_frames 16, the recipe defaults) and reports the process's resident high-water mark (VmHWM) above what it
held after opening a 4-frame clip the same way (codecs, numpy and buffers loaded), plus the wall time and the size of
the frames kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = """
import json, re, sys, time
import numpy as np

def peak():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024

def decode_all_then_sample(path, fps, max_frames):  # the data path before #15
    import av
    from qwen35_tune.data.media import sample_indices
    with av.open(path) as container:
        stream = container.streams.video[0]
        source_fps = float(stream.average_rate)
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    indices = sample_indices(len(decoded), source_fps, fps, max_frames)
    return np.stack([decoded[i] for i in indices])

def sample_while_decoding(path, fps, max_frames):
    from qwen35_tune.data.media import open_video
    return open_video(path, fps, max_frames).frames

strategy = {"before": decode_all_then_sample, "after": sample_while_decoding}[sys.argv[1]]
strategy(sys.argv[3], 2.0, 16)
base = peak()
start = time.perf_counter()
frames = strategy(sys.argv[2], 2.0, 16)
print(json.dumps({"peak": peak() - base, "seconds": time.perf_counter() - start, "kept": frames.nbytes,
                  "shape": list(frames.shape)}))
"""


def write_clip(path: Path, frames: int, width: int, height: int, rate: int) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (height + frames, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(noise[i : i + height]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--rate", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip, warm = Path(tmp) / "clip.mp4", Path(tmp) / "warm.mp4"
        write_clip(clip, args.seconds * args.rate, args.width, args.height, args.rate)
        write_clip(warm, 4, args.width, args.height, args.rate)
        print(f"{args.seconds} s of {args.width}x{args.height} at {args.rate} fps ({clip.stat().st_size / 1e6:.1f} MB "
              "file), sampled at 2 fps, at most 16 frames")
        for strategy in ("before", "after"):
            out = subprocess.run([sys.executable, "-c", CHILD, strategy, str(clip), str(warm)], cwd=REPO, check=True,
                                 capture_output=True, text=True).stdout
            got = json.loads(out.splitlines()[-1])
            label = "decode every frame, then sample" if strategy == "before" else "sample while decoding"
            print(f"  {label:32s} peak +{got['peak'] / 2**20:7.1f} MiB  {got['seconds']:5.1f} s  "
                  f"kept {got['shape']} = {got['kept'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
