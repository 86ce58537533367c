"""Write sklearn's bundled digits (1,797 images, 8x8, 10 classes) as an image folder, upsampled PNG files.

    python examples/make_digits_images.py /tmp/digits_png [--size 32] [--per-class N]

gives /tmp/digits_png/<digit>/<n>.png, greyscale, `size`x`size` pixels: the layout `--dataset DIR` reads
(one subfolder per class). Offline: the digits ship inside scikit-learn.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def write(directory: Path, size: int = 32, per_class: int | None = None) -> int:
    """Write the PNG files (at most `per_class` of each digit); return how many were written."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    written = 0
    counts: dict[int, int] = {}
    for pixels, label in zip(digits.images, digits.target, strict=True):
        n = counts.get(int(label), 0)
        if per_class is not None and n >= per_class:
            continue
        counts[int(label)] = n + 1
        folder = directory / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        grey = np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8)  # sklearn's digits are 0..16
        Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.BILINEAR).save(folder / f"{n}.png")
        written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--size", type=int, default=32, help="side of the square PNG files in pixels (default 32)")
    parser.add_argument("--per-class", type=int, help="at most this many images of each digit (default: all)")
    args = parser.parse_args()
    n = write(args.directory, args.size, args.per_class)
    print(f"wrote {n} PNG files ({args.size}x{args.size}, greyscale) under {args.directory}/<digit>/")


if __name__ == "__main__":
    main()
