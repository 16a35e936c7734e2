"""The plain header reader gives pydicom's answers, or declines and leaves the file to pydicom.

Reference: ``pydicom.dcmread`` on the same file, attribute by attribute, and the whole DICOM reader
(``read_dicom_frames``: values, masks, keys) with the shortcut switched off. Files: every test file shipped in
pydicom's wheel, plus generated files with the awkward cases (nested undefined-length sequences in both VR
encodings, character sets, several values, signed padding in implicit VR, truncation, enhanced objects).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

import pipeline.io.dicom as dicom_module
from pipeline.io import UnreadableImageError
from pipeline.io.dicom import is_dicom_file, read_dicom_frames
from pipeline.io.dicom_header import HEADER_TAGS, NEEDS_PYDICOM, read_plain_header
from tests.fixtures.dicom_files import write_ct
from tests.fixtures.dicom_files import read_or_none, shipped_pydicom_files
from tests.fixtures.paths import REALDATA, present

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _pydicom_value(ds: Dataset, keyword: str) -> object:
    """What the pipeline makes of pydicom's value: str for text, int, float, list of floats, bytes."""
    value = ds[keyword].value
    kind = HEADER_TAGS[keyword][2]
    if kind == "text":
        return str(value)
    if kind == "texts":
        return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]
    if kind in ("US", "US|SS", "IS"):
        return int(value)
    if kind == "DS":
        return float(value)
    if kind == "spacing":
        return [float(v) for v in value]
    return bytes(value)


def _frames_without_shortcut(path: Path, monkeypatch) -> list:
    with monkeypatch.context() as patch:
        patch.setattr(dicom_module, "read_plain_header", lambda _path: None)
        return read_dicom_frames(path)


def assert_same_frames(path: Path, monkeypatch) -> None:
    """read_dicom_frames with and without the shortcut: same frames, same keys, or the same error."""
    try:
        expected = _frames_without_shortcut(path, monkeypatch)
    except UnreadableImageError as error:
        with pytest.raises(type(error)) as raised:
            read_dicom_frames(path)
        assert str(raised.value) == str(error)
        return
    found = read_dicom_frames(path)
    assert len(found) == len(expected), path.name
    for image, reference in zip(found, expected):
        for name in (f.name for f in fields(image)):
            a, b = getattr(image, name), getattr(reference, name)
            if isinstance(a, np.ndarray):
                assert a.dtype == b.dtype, (path.name, name)
                np.testing.assert_array_equal(a, b, err_msg=f"{path.name}: {name}")
            else:
                assert a == b, (path.name, name)


def test_every_shipped_file_it_accepts_reads_as_pydicom_reads_it(monkeypatch):
    accepted = []
    for path in shipped_pydicom_files():
        header, ds = read_plain_header(path), read_or_none(path)
        if header is None:
            continue
        assert ds is not None, f"{path.name}: accepted, but pydicom cannot read it"
        for keyword in HEADER_TAGS:
            assert (keyword in header) == (keyword in ds), (path.name, keyword)
            if keyword in ds:
                assert header.get(keyword) == _pydicom_value(ds, keyword), (path.name, keyword)
        assert header.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert_same_frames(path, monkeypatch)
        accepted.append(path.name)
    # explicit and implicit VR, padding, overlays, with and without sequences: not a vacuous pass (pydicom 3.0
    # ships 30 such images and ~70 other headers it accepts: DICOMDIRs, SR, RT, colour)
    expected = {"CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_padded.dcm", "examples_overlay.dcm"}
    assert expected <= set(accepted) and len(accepted) >= 30, accepted


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "image_dfl.dcm",
                                  "MR_truncated.dcm", "liver_1frame.dcm", "badVR.dcm"])
def test_compressed_big_endian_deflated_truncated_and_enhanced_files_are_declined(monkeypatch, name):
    path = next(p for p in shipped_pydicom_files() if p.name == name)
    assert read_plain_header(path) is None
    assert_same_frames(path, monkeypatch)


def _referenced_items(depth: int) -> Sequence:
    """A sequence whose item holds a code and, ``depth`` times over, another such sequence."""
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "T-D0050", "SRT", "Tissue"
    if depth:
        item.ReferencedImageSequence = _referenced_items(depth - 1)
    return Sequence([item, Dataset()])


def _undefined_lengths(ds: Dataset) -> None:
    """Mark every sequence and item below ``ds`` for writing with undefined length and delimiters."""
    for element in ds:
        if element.VR == "SQ":
            element.is_undefined_length = True
            for item in element.value:
                item.is_undefined_length_sequence_item = True
                _undefined_lengths(item)


@pytest.mark.parametrize("undefined", [True, False])
@pytest.mark.parametrize("implicit", [False, True])
def test_nested_sequences_are_walked_past(tmp_path, monkeypatch, implicit, undefined):
    """Sequences and items of defined and undefined length, nested four deep: the walker must find their ends
    (delimiters, also nested) and the wanted elements after them (Rows, Pixel Data …)."""
    stored = np.arange(-200, 200, dtype=np.int16).reshape(20, 20)
    path = write_ct(tmp_path / "seq.dcm", stored, PixelPaddingValue=-200,
                    ProcedureCodeSequence=_referenced_items(3), ReferencedImageSequence=_referenced_items(1))
    ds = pydicom.dcmread(path)
    if undefined:
        _undefined_lengths(ds)
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    delimiters = path.read_bytes().count(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert delimiters == (6 if undefined else 0), delimiters
    header = read_plain_header(path)
    assert header is not None
    assert header.PixelPaddingValue == -200 and header.Rows == 20 and header.RescaleIntercept == -1024.0
    assert bytes(header.PixelData) == stored.tobytes()
    assert_same_frames(path, monkeypatch)


@pytest.mark.parametrize(("changes", "why"), [
    ({"PatientName": "Müller^Jürgen", "SpecificCharacterSet": "ISO_IR 100", "PatientID": None}, "non-ASCII text"),
    ({"PatientID": ["A", "B"]}, "several values"),
    ({"PixelSpacing": [0.5, 0.5, 0.5]}, "three spacings"),
    ({"RescaleSlope": None}, None),  # half a rescale: still plain, pydicom then applies none
    ({"PatientName": "", "PatientID": ""}, None),  # grouped by the study UID
    ({"ModalityLUTSequence": Sequence([Dataset()])}, "a Modality LUT"),
])
def test_unusual_headers_are_left_to_pydicom_or_read_alike(tmp_path, monkeypatch, changes, why):
    path = write_ct(tmp_path / "u.dcm", np.zeros((8, 8), np.int16), **changes)
    header = read_plain_header(path)
    assert (header is None) == (why is not None), why
    assert_same_frames(path, monkeypatch)


def test_signed_padding_in_implicit_vr_follows_pixel_representation(tmp_path, monkeypatch):
    stored = np.array([[-2000, -2000, 0], [5, 6, -2000]], np.int16)
    path = write_ct(tmp_path / "p.dcm", stored, PixelPaddingValue=-2000)
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
    header = read_plain_header(path)
    assert header is not None and header.PixelPaddingValue == pydicom.dcmread(path).PixelPaddingValue == -2000
    assert_same_frames(path, monkeypatch)
    assert read_dicom_frames(path)[0].valid.sum() == 3


@pytest.mark.parametrize("cut", [200, 600, -7])
def test_truncated_files_get_pydicoms_reason(tmp_path, monkeypatch, cut):
    path = write_ct(tmp_path / "t.dcm", np.ones((16, 16), np.int16))
    path.write_bytes(path.read_bytes()[:cut])
    assert read_plain_header(path) is None
    assert_same_frames(path, monkeypatch)


def test_a_file_cut_anywhere_is_never_read_as_plain(tmp_path):
    """Every cut point, not a few sampled ones: random UID lengths move the element boundaries."""
    whole = write_ct(tmp_path / "w.dcm", np.ones((16, 16), np.int16)).read_bytes()
    cut_path = tmp_path / "cut.dcm"
    survivors = []
    for cut in range(len(whole)):
        cut_path.write_bytes(whole[:cut])
        if read_plain_header(cut_path) is not None:
            survivors.append(cut)
    assert survivors == []


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_files_go_through_pydicom(tmp_path, monkeypatch, syntax):
    path = write_ct(tmp_path / "c.dcm", np.arange(4096, dtype=np.int16).reshape(64, 64))
    ds = pydicom.dcmread(path)
    ds.compress(syntax)
    ds.save_as(path)
    assert read_plain_header(path) is None
    assert_same_frames(path, monkeypatch)


def test_a_lookup_it_cannot_answer_raises_instead_of_answering_absent(tmp_path):
    header = read_plain_header(write_ct(tmp_path / "k.dcm", np.zeros((4, 4), np.int16)))
    assert header.get("PerFrameFunctionalGroupsSequence") is None and "FloatPixelData" not in header
    assert set(NEEDS_PYDICOM).isdisjoint(HEADER_TAGS)
    with pytest.raises(LookupError, match="WindowCenter"):
        header.get("WindowCenter")


def test_a_repeated_element_is_left_to_pydicom(tmp_path, monkeypatch):
    """Two PatientID elements (a broken export): which one counts is pydicom's call, not the shortcut's."""
    path = write_ct(tmp_path / "d.dcm", np.zeros((4, 4), np.int16), PatientID="PAT-1")
    raw = path.read_bytes()
    element = b"\x10\x00\x20\x00LO\x06\x00PAT-1 "
    assert raw.count(element) == 1
    path.write_bytes(raw.replace(element, element + b"\x10\x00\x20\x00LO\x06\x00OTHER "))
    assert read_plain_header(path) is None
    assert_same_frames(path, monkeypatch)


def test_real_files_in_shared_realdata_read_alike(monkeypatch):
    """Real scanner headers (private groups, nested sequences, CT and MR, X-ray): same frames either way."""
    files = [p for p in sorted(present(REALDATA).rglob("*")) if p.is_file() and is_dicom_file(p)]
    for path in files:
        assert_same_frames(path, monkeypatch)
    plain = [p.name for p in files if read_plain_header(p) is not None]
    assert len(plain) >= 10, plain  # the real CT and MR slices and the tiny single-frame volumes


def test_a_compressed_file_is_declined_from_its_first_bytes(tmp_path, monkeypatch):
    """The transfer syntax is read from the file meta probe: a compressed file is not read in full twice."""
    path = write_ct(tmp_path / "c.dcm", np.arange(4096, dtype=np.int16).reshape(64, 64))
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(path)
    reads = []
    real_open = open

    class CountingFile:
        def __init__(self, stream):
            self.stream = stream

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.stream.close()

        def read(self, size=-1):
            data = self.stream.read(size)
            reads.append(len(data))
            return data

        def seek(self, offset):
            return self.stream.seek(offset)

    monkeypatch.setattr("builtins.open", lambda *a, **k: CountingFile(real_open(*a, **k)))
    assert read_plain_header(path) is None
    assert sum(reads) <= 4096 < path.stat().st_size


def test_an_implicit_vr_dataset_under_an_explicit_vr_syntax_is_left_to_pydicom(tmp_path, monkeypatch):
    """A mislabelled file (seen in the wild): length bytes must not be taken for a VR; pydicom detects it."""
    path = write_ct(tmp_path / "m.dcm", np.arange(-8, 8, dtype=np.int16).reshape(4, 4))
    ds = pydicom.dcmread(path)
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True, force_encoding=True)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert read_plain_header(path) is None
    assert_same_frames(path, monkeypatch)
