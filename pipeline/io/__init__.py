"""Readers that turn image files into float arrays, a valid-pixel mask and metadata.

Every reader raises :class:`UnreadableImageError` (a one-line message that starts with the file's path) for a
file it cannot decode, so that ingest can skip that file with a reason and go on with the rest of the folder.
"""

from __future__ import annotations

__all__ = ["UnreadableImageError"]


class UnreadableImageError(ValueError):
    """A file that is missing, corrupt, truncated or in a form this reader does not support.

    The message is one line and names the file; it never contains patient identifiers.
    """
