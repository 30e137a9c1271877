"""A PNG of a Locust HTML report (its tables and charts), rendered by headless Chromium.

    python -m loadtests.screenshot loadtest-reports/locust.html docs/loadtests/locust-report.png

Needs Debian's `chromium` package. The page is rendered tall, then cut below the last
chart (below the last row with coloured pixels, a chart's line or legend, and the axis
under it), dropping the "Final ratio" lists beneath. Chromium runs with a throw-away profile, no network
services, and only ever opens the local file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WIDTH, HEIGHT = 1400, 4200
GAP = 40  # blank rows that end the last chart (below its time axis labels)
MARGIN = 20


def render(report: Path, png: Path) -> None:
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        command = [shutil.which("chromium") or "chromium", "--headless", "--no-sandbox",
                   "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                   "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                   f"--screenshot={png}", f"--window-size={WIDTH},{HEIGHT}",
                   "--virtual-time-budget=10000", report.resolve().as_uri()]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def crop_below_charts(png: Path) -> tuple[int, int]:
    """Cut the image at the first blank band below its last coloured row; return the new size."""
    image = Image.open(png).convert("RGB")
    pixels = np.asarray(image).astype(int)
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    coloured_rows = np.nonzero((saturation > 80).sum(axis=1) > 3)[0]
    blank = (pixels.min(axis=2) > 245).all(axis=1)
    bottom = image.height
    if len(coloured_rows):
        row, run = int(coloured_rows.max()), 0
        while row < image.height and run < GAP:
            run = run + 1 if blank[row] else 0
            row += 1
        bottom = min(image.height, row - run + MARGIN)
    image.crop((0, 0, image.width, bottom)).save(png, optimize=True)
    return image.width, bottom


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report, png = Path(sys.argv[1]), Path(sys.argv[2])
    png.parent.mkdir(parents=True, exist_ok=True)
    render(report, png)
    width, height = crop_below_charts(png)
    print(f"{png}: {width}x{height}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
