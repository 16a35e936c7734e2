"""Building blocks for DICOM test files written with pydicom."""

from pydicom.dataset import Dataset


def sequence_item(**attributes) -> Dataset:
    """One item of a DICOM sequence, from keyword=value pairs (e.g. a functional group macro)."""
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item
