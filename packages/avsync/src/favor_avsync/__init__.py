"""favor-avsync: FAVOR's frame-level audio-visual synchroniser and exact media decoding.

- `TemporalSynchroniser` aligns audio-encoder feature streams with video frames by time and joins them
  per frame (``mode="released"`` reproduces the released ``sequence_align_v2`` bit for bit).
- `load_media` decodes a video, audio or image file (or bytes) into time-stamped frames and mono audio on
  one clock (needs the ``[media]`` extra: PyAV and tqdm, imported only when media is loaded); `MediaLimits`
  bounds what it decodes, and bad files are `MediaError` / `MissingMediaError` (``ValueError`` subclasses).
"""

from favor_avsync.errors import MediaError, MissingMediaError
from favor_avsync.limits import MediaLimits
from favor_avsync.media import MediaClip, load_media
from favor_avsync.synchroniser import SyncOutput, TemporalSynchroniser

__all__ = [
    "MediaClip",
    "MediaError",
    "MediaLimits",
    "MissingMediaError",
    "SyncOutput",
    "TemporalSynchroniser",
    "load_media",
]
__version__ = "0.1.0"
