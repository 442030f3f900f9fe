"""Image size from an encoded image's header, without decoding it.

The stream's planner reads every frame's size before it plans a crop (the window is clipped to the
image, and a box that misses the image is bad data), so this must cost microseconds, not a decode:
JPEG and PNG headers are parsed here; other formats go through PIL, which also reads only the
header.
"""

import io

from PIL import Image

# JPEG start-of-frame markers (not DHT/JPG/DAC)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def image_size(data):
  """(width, height) from an encoded image's header; ValueError when it is not a readable image.

  JPEG (walks the marker segments to the frame header) and PNG (IHDR) are parsed here, in a few
  microseconds; other formats go through PIL.
  """
  if data[:2] == b'\xff\xd8':
    i = 2
    while i + 9 <= len(data):
      if data[i] != 0xFF:
        raise ValueError(f'bad JPEG marker at byte {i}')
      marker = data[i + 1]
      if marker == 0xFF:  # fill byte
        i += 1
      elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # segments without a length
        i += 2
      elif marker in _JPEG_SOF:
        height = int.from_bytes(data[i + 5:i + 7], 'big')
        width = int.from_bytes(data[i + 7:i + 9], 'big')
        break
      elif marker in (0xDA, 0xD9):
        raise ValueError('JPEG without a frame header')
      else:
        i += 2 + int.from_bytes(data[i + 2:i + 4], 'big')
    else:
      raise ValueError('truncated JPEG header')
  elif data[:8] == _PNG_SIGNATURE and data[12:16] == b'IHDR' and len(data) >= 24:
    width, height = int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
  else:
    try:
      with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    except Exception as e:  # PIL raises several types for bad headers
      raise ValueError(f'unreadable image: {e}') from e
  if width <= 0 or height <= 0:
    raise ValueError(f'image size {width} x {height}')
  return width, height


def file_image_size(path):
  """(width, height) of an image file from its first bytes (the stream's tf.io.read_file reads the
  rest in the graph, without the GIL); OSError when missing, ValueError when unreadable."""
  with open(path, 'rb') as f:
    data = f.read(4096)
    while True:
      try:
        return image_size(data)
      except ValueError:
        more = f.read(max(len(data), 65536))
        if not more:
          raise
        data += more
