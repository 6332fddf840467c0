"""Regenerate the 32 px thumbnails of the shipped sample photos (CIFAKE-sized inputs for cifake-cnn)."""

from pathlib import Path

from PIL import Image

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "synthdetect" / "samples"

for name in ("chelsea.png", "coffee.png", "rocket.jpg"):
    image = Image.open(SAMPLES / name).convert("RGB")
    side = min(image.size)
    left, top = (image.size[0] - side) // 2, (image.size[1] - side) // 2
    thumb = image.crop((left, top, left + side, top + side)).resize((32, 32), Image.Resampling.LANCZOS)
    thumb.save(SAMPLES / f"{Path(name).stem}-32px.jpg", quality=95)
