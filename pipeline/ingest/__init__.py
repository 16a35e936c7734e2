"""Ingest: a user's folder of DICOM / GeoTIFF / plain images → the chip cache every later stage reads.

Per-format sources (``dicom_source``, ``geotiff_source`` + ``scenes``, ``sources`` for plain images, chosen by
``source_kinds``), the pool that decodes files in worker processes (``file_pool``), labels and masks beside
the images (``segmentations``), band and value-range policies (``bands``, ``value_ranges``), leakage-free
splits by patient or spatial block (``splits``), PHI-safe paths (``phi``), and the run itself (``folder``).
The cache format is :mod:`pipeline.data.chips`, the training-time data contract.
"""
