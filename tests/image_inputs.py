"""Image files for the demo and command-line tests: every kind of input the issue lists, made in memory."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def gradient(w: int = 64, h: int = 48) -> np.ndarray:
    """A smooth RGB uint8 picture (h, w, 3) whose centre crop downsamples to known values."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 90)], -1).astype(np.uint8)


def png_header_only(w: int, h: int) -> bytes:
    """A valid 1-bit grayscale PNG of w x h pixels, all black, compressed to a few KB per megapixel-row:
    a decompression bomb (20000 x 20000 = 400 megapixels from ~60 KB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (w + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def good_inputs() -> dict[str, bytes]:
    """Inputs that must be converted and predicted: name -> file bytes."""
    rgb = Image.fromarray(gradient())
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (48, 1))))
    frame1, frame2 = Image.new("RGB", (40, 40), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 0, 255))
    anim = io.BytesIO()
    frame1.save(anim, format="GIF", save_all=True, append_images=[frame2], duration=100, loop=0)
    palette_t = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    palette_t.info["transparency"] = 0
    return {
        "rgb.png": encode(rgb, "PNG"),
        "rgb.jpg": encode(rgb, "JPEG", quality=95),
        "rgb.webp": encode(rgb, "WEBP", lossless=True),
        "rgb.bmp": encode(rgb, "BMP"),
        "palette.gif": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "GIF"),
        "palette.png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32), "PNG"),
        "palette_transparent.png": encode(palette_t, "PNG", transparency=0),
        "grayscale.png": encode(rgb.convert("L"), "PNG"),
        "grayscale.jpg": encode(rgb.convert("L"), "JPEG"),
        "bilevel.png": encode(rgb.convert("1"), "PNG"),
        "rgba.png": encode(rgba, "PNG"),
        "gray_alpha.png": encode(rgba.convert("LA"), "PNG"),
        "gray16.png": encode(Image.fromarray(np.full((40, 40), 32896, dtype=np.uint16)), "PNG"),
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "animated.gif": anim.getvalue(),
        "tiny_3x2.png": encode(Image.fromarray(gradient(3, 2)), "PNG"),
        "large_3000x2000.jpg": encode(Image.fromarray(gradient(3000, 2000)), "JPEG", quality=80),
    }


def bad_inputs() -> dict[str, tuple[bytes, str]]:
    """Inputs that must be refused: name -> (file bytes, a phrase the error message must contain)."""
    png = encode(Image.fromarray(gradient()), "PNG")
    jpg = encode(Image.fromarray(gradient(256, 256)), "JPEG")
    tiff = encode(Image.fromarray(gradient()), "TIFF")
    gif = encode(Image.fromarray(gradient(128, 128)).convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    webp = encode(Image.fromarray(gradient(128, 128)), "WEBP")
    return {
        "empty.png": (b"", "empty (0 bytes)"),
        "text.png": (b"this is not an image, just some text\n" * 20, "not an image in a supported format"),
        "truncated.png": (png[: len(png) // 2], "truncated or damaged"),
        "truncated.jpg": (jpg[: len(jpg) // 2], "truncated or damaged"),
        "truncated.gif": (gif[: len(gif) // 2], "truncated or damaged"),
        "truncated.webp": (webp[: len(webp) // 2], "truncated or damaged"),
        "bomb_20000x20000.png": (png_header_only(20000, 20000), "40-megapixel limit (a guard against decompression bombs"),
        "large_8000x6000.png": (png_header_only(8000, 6000), "megapixel limit"),
        "image.tiff": (tiff, "not an image in a supported format"),
    }
