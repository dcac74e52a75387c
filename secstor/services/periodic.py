"""Imports the modules that register periodic tasks (see secstor.services.background)."""

import secstor.services.capacity  # noqa: F401  (capacity scans of image stores)
import secstor.services.template_sync  # noqa: F401  (template copies on new stores, stale-write clean-up)
import secstor.services.snapshots  # noqa: F401  (snapshot policies, snapshot chunk GC)
import secstor.services.volume_transfers  # noqa: F401  (abandoned uploads, expired extract copies)
import secstor.services.staging  # noqa: F401  (least-recently-used eviction of staging copies)
import secstor.services.region_sync  # noqa: F401  (zone templates uploaded to the region store)
