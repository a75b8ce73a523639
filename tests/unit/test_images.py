"""swms.images: stored images keep their look and lose what the camera wrote about the person."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from services.profile import media
from services.profile.testing import make_photo, with_phone_metadata
from swms import images


def test_stored_images_lose_their_metadata_and_keep_their_look():
    original = with_phone_metadata(make_photo(295, 413, "JPEG"))
    with Image.open(io.BytesIO(original)) as image:   # the fixture really carries what we strip
        assert image.getexif().get_ifd(0x8825) and b"taken at home" == image.info["comment"]
    cleaned = images.without_metadata(original, images.JPEG)
    with Image.open(io.BytesIO(cleaned)) as image:
        assert (image.format, image.size) == ("JPEG", (295, 413))
        assert len(image.getexif()) == 0 and "comment" not in image.info and "exif" not in image.info
        assert image.getpixel((147, 400))[2] > image.getpixel((147, 400))[0]   # still the dark-blue shoulders
    assert b"PhoneMaker" not in cleaned and b"Phone 15" not in cleaned
    assert media.inspect_photo(cleaned, 3.0).photo_size == "一寸"


def test_a_sideways_photo_is_stored_upright():
    """Stored 413×295 with orientation 6 (turn 90° clockwise to view): kept as a 295×413 portrait,
    so that every viewer and the certificate renderer show it the right way up."""
    with Image.open(io.BytesIO(make_photo(295, 413, "JPEG"))) as portrait:
        sideways = portrait.transpose(Image.Transpose.ROTATE_90)    # what the camera stored
        out = io.BytesIO()
        sideways.save(out, "JPEG", quality=92)
    original = with_phone_metadata(out.getvalue(), orientation=6)
    assert media.inspect_photo(original, 3.0).width == 295           # judged as displayed
    cleaned = images.without_metadata(original, images.JPEG)
    with Image.open(io.BytesIO(cleaned)) as image:
        assert image.size == (295, 413) and 0x0112 not in image.getexif()
        assert image.getpixel((147, 400))[2] > image.getpixel((147, 400))[0]   # shoulders at the bottom


def test_png_text_chunks_are_dropped():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Location", "39.9N 116.4E")
    with Image.open(io.BytesIO(make_photo(295, 413, "PNG"))) as image:
        out = io.BytesIO()
        image.save(out, "PNG", pnginfo=info)
    assert b"39.9N" in out.getvalue()
    cleaned = images.without_metadata(out.getvalue(), images.PNG)
    assert b"39.9N" not in cleaned and b"Location" not in cleaned
    with Image.open(io.BytesIO(cleaned)) as image:
        assert (image.format, image.size) == ("PNG", (295, 413))


def test_a_small_file_that_would_inflate_to_a_huge_bitmap_is_refused_before_decoding():
    bomb = io.BytesIO()
    Image.new("1", (10_000, 7_000)).save(bomb, "PNG")      # 70 Mpx of nothing: a few kilobytes
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(images.TooManyPixels, match="10000×7000"):
        images.without_metadata(bomb.getvalue(), images.PNG)
