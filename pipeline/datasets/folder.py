"""Generic folder adapter (``folder``): any tree of videos and images, labels unknown.

* every video file (:data:`~pipeline.datasets.base.VIDEO_EXTENSIONS`, case-insensitive) is
  one item (``extra["kind"] = "video"``);
* a file with an image extension whose content is a video (an ``.mp4`` renamed ``.jpg``) is a
  video item too;
* the loose images of one folder (:data:`~pipeline.datasets.base.IMAGE_EXTENSIONS`) form one
  item whose path is the folder (``kind = "image_folder"``, ``extra["n_images"]``): a batch
  of stills processed together, one part per folder;
* other files are listed in ``ScanResult.ignored``; broken links and unreadable folders are
  rejected with the reason.

Items have ``label="unknown"``, ``attack_type="unknown"``, no split or subject. Symlinked
folders are followed once per real folder, so link loops terminate (reported in
``rejected``). A root that is itself a video or image file gives one item.
"""

from __future__ import annotations

import logging
import os

from pipeline.base.errors import UnsupportedInput
from pipeline.io.frames import is_video_path
from .base import (
    ADAPTERS,
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    DatasetAdapter,
    ScanResult,
    make_item,
    walk_tree,
)

logger = logging.getLogger(__name__)

NAME = "folder"


def _unknown_item(root: str, rel: str, kind: str, **extra):
    return make_item(
        NAME, root, rel, label="unknown", attack_family="unknown", keep_extension=True, kind=kind, **extra
    )


@ADAPTERS.register(NAME)
class FolderAdapter(DatasetAdapter):
    """Videos and image folders under a root, labels unknown (see module docstring)."""

    name = NAME

    def scan(self, root) -> ScanResult:
        path = os.path.abspath(os.fspath(root))
        if os.path.isfile(path):
            ext = os.path.splitext(path)[1].lower()
            if ext not in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS:
                raise UnsupportedInput(f"not a video or image (extension {ext or 'none'})", source=path)
            parent = os.path.dirname(path)
            kind = "video" if ext in VIDEO_EXTENSIONS else "image"
            return ScanResult([_unknown_item(parent, os.path.basename(path), kind)], [], [], NAME, parent)
        root_abs = self._check_root(path)
        result = ScanResult(dataset=NAME, root=root_abs)
        for dirpath, files in walk_tree(root_abs, result.rejected):
            images = []
            for f in files:
                full = os.path.join(dirpath, f)
                ext = os.path.splitext(f)[1].lower()
                if ext not in VIDEO_EXTENSIONS and ext not in IMAGE_EXTENSIONS:
                    result.ignored.append(full)
                    continue
                if not os.path.isfile(full):
                    result.rejected.append((full, "broken link or not a regular file"))
                    continue
                if ext in IMAGE_EXTENSIONS and not is_video_path(full):  # a video named .jpg is a video
                    images.append(f)
                else:
                    result.items.append(_unknown_item(root_abs, os.path.relpath(full, root_abs), "video"))
            if images:
                rel = os.path.relpath(dirpath, root_abs)
                result.items.append(
                    _unknown_item(root_abs, "" if rel == "." else rel, "image_folder", n_images=len(images))
                )
        logger.info(
            "folder %s: %d items, %d rejected, %d ignored",
            root_abs, len(result.items), len(result.rejected), len(result.ignored),
        )
        return result
