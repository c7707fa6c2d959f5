"""Media a row names can neither escape the card's media folders (absolute paths, '..', '~', symlinks, frame folders,
container formats that open other files) nor exhaust the machine (pixel counts checked from the header before
decoding, inline images sized before decoding, videos sampled while decoding, absurd frame counts refused)."""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from qwen35_tune.data.formats import BadRow
from qwen35_tune.data.media import open_image, open_video, resolve_ref
from qwen35_tune.errors import UserError
from qwen35_tune.recipe import load_recipe


def _png(path: Path, size=(40, 40), colour=(200, 30, 30)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels in its header (a decompression bomb needs no more)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _clip(path: Path, frames: int = 16, size: int = 64, rate: int = 4, codec: str = "mpeg4") -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
        for i in range(frames):  # brightness rising, so frames can be told apart
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), i * 255 // frames, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# --- sizes ---------------------------------------------------------------------------------------------------------

def test_a_20000x20000_png_is_a_bad_row_not_a_crash(tmp_path):
    bomb = _png_header(tmp_path / "bomb.png", 20_000, 20_000)
    with pytest.raises(BadRow, match=r"image 'bomb\.png' is too large to decode safely"):
        open_image(str(bomb))


def test_pixels_are_checked_from_the_header_against_max_pixels(tmp_path):
    big = _png_header(tmp_path / "big.png", 9000, 9000)  # 81M pixels: under Pillow's limit, over 64 x 1024^2
    with pytest.raises(BadRow, match=r"9000x9000 = 81,000,000 pixels, more than 67,108,864 \(64 x model\.vision"):
        open_image(str(big), max_pixels=1024 * 1024)
    with pytest.raises(BadRow, match="unreadable image 'big.png'"):  # a larger budget lets it be decoded (and fail)
        open_image(str(big), max_pixels=2048 * 2048)
    assert open_image(str(_png(tmp_path / "ok.png", (600, 400))), max_pixels=32 * 32).size == (600, 400)


def test_inline_images_are_sized_before_decoding(monkeypatch, tmp_path):
    import qwen35_tune.data.media as media

    uri = "data:image/png;base64," + base64.b64encode(_png(tmp_path / "a.png").read_bytes()).decode()
    assert open_image(uri).size == (40, 40)
    monkeypatch.setattr(media, "MAX_INLINE_IMAGE_BYTES", 64)
    monkeypatch.setattr(media.base64, "b64decode", lambda *a, **k: pytest.fail("decoded before the size check"))
    with pytest.raises(BadRow, match="inline image holds about 0 MiB, more than 0 MiB; give it as a file"):
        open_image(uri)


def test_decoded_hub_images_are_sized_too():
    from PIL import Image

    with pytest.raises(BadRow, match=r"decoded image is 5000x4000"):
        open_image(Image.new("L", (5000, 4000)), max_pixels=16 * 16)


def test_only_image_formats_are_decoded(tmp_path):
    eps = tmp_path / "page.png"  # Pillow would hand an EPS to Ghostscript
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(BadRow, match=r"unreadable image 'page\.png'"):
        open_image(str(eps))


def test_video_frames_are_sampled_while_decoding(tmp_path):
    """Only the kept frames become arrays: 240 frames of 256x256 once held 47 MB of arrays to keep 4 of them. Peak
    memory is measured in a fresh process (the arrays live in ffmpeg's buffers, which tracemalloc cannot see)."""
    import subprocess
    import sys

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux's /proc to read peak memory")
    clip = _clip(tmp_path / "clip.mp4", frames=240, size=256, rate=30)
    warm = _clip(tmp_path / "warm.mp4", frames=4, size=256, rate=30)
    script = (  # VmHWM: this process's peak resident memory (ru_maxrss would include the forking parent's)
        "import re, sys\n"
        "from qwen35_tune.data.media import open_video\n"
        "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))\n"
        "open_video(sys.argv[2], fps=1.0, max_frames=4)\n"  # codecs and numpy loaded, buffers allocated
        "before = peak()\n"
        "video = open_video(sys.argv[1], fps=1.0, max_frames=4)\n"
        "print(video.frames.shape, video.indices, peak() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(clip), str(warm)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout.split()
    assert " ".join(out[:8]) == "(4, 256, 256, 3) (0, 60, 120, 180)"
    assert int(out[-1]) < 12 * 1024, f"peak memory grew {int(out[-1]) / 1024:.0f} MiB while decoding"


def test_a_video_without_a_frame_count_is_counted_then_sampled(tmp_path):
    av = pytest.importorskip("av")
    clip = _clip(tmp_path / "clip.ts", frames=16, codec="mpeg2video")
    with av.open(str(clip)) as container:
        assert container.streams.video[0].frames == 0  # MPEG-TS states no frame count
    video = open_video(str(clip), fps=1.0, max_frames=8)
    assert video.total_frames == 16 and video.indices == (0, 4, 8, 12)
    means = [float(frame.mean()) for frame in video.frames]
    assert means == sorted(means) and means[-1] - means[0] > 100  # the frames the indices name, in order


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])  # a stated frame count, and one counted while decoding
def test_absurd_frame_counts_and_sizes_are_bad_rows(tmp_path, monkeypatch, suffix):
    import qwen35_tune.data.media as media

    clip = _clip(tmp_path / f"clip{suffix}", frames=16, codec="mpeg4" if suffix == ".mp4" else "mpeg2video")
    monkeypatch.setattr(media, "MAX_VIDEO_FRAMES", 10)
    with pytest.raises(BadRow, match=r"video 'clip\.(mp4|ts)' has (16 frames, )?more than 10"):
        open_video(str(clip), fps=1.0, max_frames=4)
    monkeypatch.setattr(media, "MAX_VIDEO_FRAMES", 1000)
    monkeypatch.setattr(media, "MIN_SOURCE_PIXELS", 1)
    with pytest.raises(BadRow, match=r"video 'clip\.(mp4|ts)' is 64x64 = 4,096 pixels, more than 1,024"):
        open_video(str(clip), fps=1.0, max_frames=4, max_pixels=16)


def test_video_containers_that_open_other_files_are_refused(tmp_path):
    """An ffconcat list (or an HLS playlist) named .mp4 would make ffmpeg read the files it lists."""
    _clip(tmp_path / "other.mp4")
    (tmp_path / "list.mp4").write_text("ffconcat version 1.0\nfile 'other.mp4'\n")
    (tmp_path / "play.mp4").write_text("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\nother.mp4\n#EXT-X-ENDLIST\n")
    for name in ("list.mp4", "play.mp4"):
        with pytest.raises(BadRow, match=f"unreadable video '{name}'"):
            open_video(str(tmp_path / name), fps=1.0, max_frames=4)


# --- paths ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def layout(tmp_path, monkeypatch):
    """card/ (its media folder, with an image), shared/ (an image), secret/ (a file rows must never reach), home/."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    card = tmp_path / "card"
    _png(card / "img" / "ok.png")
    _png(tmp_path / "shared" / "s.png")
    _png(tmp_path / "secret" / "key.png")
    _png(tmp_path / "home" / "mine.png")
    return tmp_path


@pytest.mark.parametrize("ref", ["../secret/key.png", "img/../../secret/key.png", "{root}/secret/key.png",
                                 "~/mine.png", "link.png", "linked_dir/key.png", "/etc/passwd", "/proc/self/environ",
                                 "../secret/missing.png"])
def test_paths_leaving_the_media_folder_are_refused(layout, ref):
    card = layout / "card"
    (card / "link.png").symlink_to(layout / "secret" / "key.png")
    (card / "linked_dir").symlink_to(layout / "secret")
    with pytest.raises(BadRow, match=r"is outside the card's media folders .* list its folder under the card's "
                                     r"media_roots"):
        resolve_ref(ref.format(root=layout), "image", card)


def test_paths_inside_resolve_to_real_paths_and_media_roots_add_folders(layout):
    card = layout / "card"
    (card / "inside.png").symlink_to(card / "img" / "ok.png")
    real = os.path.realpath(card / "img" / "ok.png")
    assert resolve_ref("img/ok.png", "image", card) == real
    assert resolve_ref("img/./../img/ok.png", "image", card) == real
    assert resolve_ref("inside.png", "image", card) == real  # a symlink within the folder is fine
    assert resolve_ref(str(card / "img" / "ok.png"), "image", card) == real
    shared = layout / "shared"
    assert resolve_ref("../shared/s.png", "image", card, [shared]) == os.path.realpath(shared / "s.png")
    with pytest.raises(BadRow, match="outside the card's media folders"):
        resolve_ref("../secret/key.png", "image", card, [shared])


def test_frame_folders_and_their_frames_stay_inside(layout):
    card = layout / "card"
    frames = card / "clip"
    for i in range(4):
        _png(frames / f"{i:03d}.png", (32, 32))
    assert resolve_ref("clip", "video", card) == os.path.realpath(frames)
    (frames / "004.png").symlink_to(layout / "secret" / "key.png")
    with pytest.raises(BadRow, match=r"frame '004\.png' links outside the card's media folders"):
        resolve_ref("clip", "video", card)
    (card / "outside_clip").symlink_to(layout / "secret")
    with pytest.raises(BadRow, match="outside the card's media folders"):
        resolve_ref("outside_clip", "video", card)
    with pytest.raises(BadRow, match="a video must be a file or a folder of frames, not a data: URI"):
        resolve_ref("data:video/mp4;base64,AAAA", "video", card)


def test_a_media_folder_holding_the_home_folder_is_refused(layout):
    home = layout / "home"
    with pytest.raises(BadRow, match="is the file system root or holds your home folder"):
        resolve_ref("mine.png", "image", home)  # a card saved straight into ~
    with pytest.raises(BadRow, match="is the file system root or holds your home folder"):
        resolve_ref("etc/hostname", "image", Path("/"))


def _card(folder: Path, rows: list[dict], extra: str = "") -> Path:
    (folder / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "c.yaml").write_text("name: pics\nlicense: mit\nsource: {path: rows.jsonl}\nmax_bad_fraction: 1.0\n"
                                   + extra)
    (folder / "r.yaml").write_text("name: r\nmodel: {name_or_path: 'tiny://vision'}\ntrain: {max_length: 256}\n"
                                   "data: {cards: [{path: c.yaml}]}\n")
    return folder / "r.yaml"


def test_card_media_roots_are_checked_at_validate_time(layout):
    card = layout / "card"
    recipe = load_recipe(_card(card, [], "media_roots: [../shared]\n"))
    assert recipe.card_pairs()[0][1].media_roots == [str(layout / "shared")]
    with pytest.raises(UserError, match=r"media_roots.*folder not found"):
        load_recipe(_card(card, [], "media_roots: [../nowhere]\n"))
    with pytest.raises(UserError, match=r"media_roots.*holds your home folder"):
        load_recipe(_card(card, [], f"media_roots: [{layout}]\n"))
    with pytest.raises(UserError, match=r"media_dir.*is the file system root"):
        load_recipe(_card(card, [], "media_dir: /\n"))


def test_escaping_rows_are_quarantined_and_never_trained(layout, small_vision):
    from qwen35_tune.data.build import build_datasets

    processor, _ = small_vision
    card = layout / "card"
    (card / "link.png").symlink_to(layout / "secret" / "key.png")
    _png_header(card / "img" / "bomb.png", 20_000, 20_000)

    def row(image):
        return {"messages": [{"role": "user", "content": "Colour?"}, {"role": "assistant", "content": "Red."}],
                "images": [image]}

    rows = [row("img/ok.png"), row(str(layout / "secret" / "key.png")), row("../secret/key.png"), row("link.png"),
            row("~/mine.png"), row("../shared/s.png"), row("img/bomb.png")]
    build = lambda extra: build_datasets(load_recipe(_card(card, rows, extra)), processor.tokenizer, layout,  # noqa
                                         processor)
    train, _, _ = build("")
    records = [json.loads(line) for line in (layout / "quarantine.jsonl").read_text().splitlines()]
    assert [r["row"] for r in records] == [2, 3, 4, 5, 6, 7]
    assert all("outside the card's media folders" in r["reason"] for r in records[:5]), records
    assert "too large to decode" in records[5]["reason"]
    assert train["image_refs"] == [[os.path.realpath(card / "img" / "ok.png")]]
    train, _, _ = build("media_roots: [../shared]\n")  # the card names one more folder: its image trains
    assert sorted(train["image_refs"]) == sorted([[os.path.realpath(card / "img" / "ok.png")],
                                                  [os.path.realpath(layout / "shared" / "s.png")]])


def test_source_paths_may_point_outside_the_card_folder_but_globs_skip_hidden_files(tmp_path):
    """A card's own source files are named in its YAML (reviewed by a person, unlike millions of rows), and often sit
    in a shared data folder, so they may be anywhere; a glob does not reach into hidden files or folders."""
    from qwen35_tune.cards import load_card

    data, card = tmp_path / "data", tmp_path / "cards"
    card.mkdir()
    (data / ".private").mkdir(parents=True)
    (data / "a.jsonl").write_text("{}\n")
    (data / ".private" / "b.jsonl").write_text("{}\n")
    (data / ".c.jsonl").write_text("{}\n")
    paths = f"['../data/**/*.jsonl', '{data}/a.jsonl']"
    (card / "c.yaml").write_text(f"name: c\nlicense: mit\nsource: {{path: {paths}}}\n")
    assert load_card(card / "c.yaml").source_files() == [data / "a.jsonl"]


def test_a_fifo_is_not_a_video(layout):
    card = layout / "card"
    os.mkfifo(card / "clip.mp4")  # opening it would block the build forever
    with pytest.raises(BadRow, match=r"video 'clip\.mp4' is not a file or a folder of frames"):
        resolve_ref("clip.mp4", "video", card)
    with pytest.raises(BadRow, match=r"image 'clip\.mp4' is not a file"):
        resolve_ref("clip.mp4", "image", card)
