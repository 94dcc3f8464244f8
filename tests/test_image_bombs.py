"""A picture whose header declares more than STUDIO_MAX_IMAGE_PIXELS is refused before a pixel is decoded: in
folder and zip datasets and in the Forward tab's upload, with the limit and its variable named."""

import struct
import subprocess
import sys
import textwrap
import zipfile
import zlib
from pathlib import Path

import pytest

from studio.data.folder import open_picture
from studio.limits import LimitError

SIDE = 13_300  # 177 M pixels: under Pillow's own refusal threshold (2 x 89.5 M), 530 MB decoded as RGB


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def black_png(width: int, height: int) -> bytes:
    """A real, complete RGB PNG of zeros: a few hundred KB on disk."""
    row = b"\x00" * (1 + 3 * width)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bomb")
    (folder / "bomb.png").write_bytes(black_png(SIDE, SIDE))
    with zipfile.ZipFile(folder / "bomb.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(folder / "bomb.png", "pictures/bomb.png")
    return folder


def test_the_header_is_checked_before_decoding(bomb, monkeypatch):
    with pytest.raises(LimitError, match=r"upload \(13300x13300 pixels\): 176,890,000 is over .* 16,000,000 "
                                         r"\(set STUDIO_MAX_IMAGE_PIXELS"):
        open_picture(bomb / "bomb.png", "upload")
    monkeypatch.setenv("STUDIO_MAX_IMAGE_PIXELS", str(SIDE * SIDE))
    with open_picture(bomb / "bomb.png", "upload") as image:
        assert image.size == (SIDE, SIDE)


def test_forward_upload_is_refused(bomb):
    from studio.ui.forward import upload_as_item

    with pytest.raises(ValueError, match="STUDIO_MAX_IMAGE_PIXELS"):
        upload_as_item(str(bomb / "bomb.png"), (1, 8, 8))


PROBE = textwrap.dedent("""
    import resource, sys
    from studio.data.registry import load_dataset
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        load_dataset("folder", path=sys.argv[1], resolution=8)
        print("LOADED")
    except ValueError as err:
        print("ERROR", err)
    print("GROWTH_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
""")


@pytest.mark.parametrize("name", ["bomb.zip", "."])
def test_folder_and_zip_datasets_refuse_it_with_low_peak_memory(bomb, name, tmp_path):
    env = {"STUDIO_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parents[1])}
    path = bomb / name if name != "." else bomb
    if name == ".":
        (bomb / "only").mkdir(exist_ok=True)
        (bomb / "only" / "bomb.png").write_bytes((bomb / "bomb.png").read_bytes())
        path = bomb / "only"
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env,
                         timeout=300).stdout
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert "STUDIO_MAX_IMAGE_PIXELS" in lines["ERROR"] and "bomb.png" in lines["ERROR"]
    assert float(lines["GROWTH_MB"]) < 100  # decoding would take 530 MB and more
