"""The errors of media decoding: both are ``ValueError`` subclasses, so callers that catch bad input catch them."""

from __future__ import annotations


class MediaError(ValueError):
    """A media file that cannot be decoded or is refused: empty, truncated, corrupt, not audio/video/image, without
    usable streams, or past a `favor_avsync.MediaLimits` limit. The message names the file, what is wrong and the
    remedy."""


class MissingMediaError(MediaError, FileNotFoundError):
    """The media file does not exist."""


__all__ = ["MediaError", "MissingMediaError"]
