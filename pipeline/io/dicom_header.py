"""A fast header reader for the commonest PACS file: Part 10, uncompressed little-endian, plain greyscale.

Why it exists: ``pydicom.dcmread`` builds a full :class:`~pydicom.dataset.Dataset` (a DataElement per element,
values converted through hooks on first access), about 0.5 ms for a CT slice, and each later attribute lookup
costs 5–20 µs. For an uncompressed slice that is as much as everything else ingest does with the file (decode,
modality LUT, resize, windows), which kept ingest at half the raw ``dcmread(...).pixel_array`` speed.
pydicom's own narrowing, ``dcmread(specific_tags=...)``, is slower still (measured 0.78–0.88 ms against
0.65–0.70 ms). This module walks the element stream itself and keeps only the attributes the pixel pipeline
reads (:data:`HEADER_TAGS`), in ~0.26 ms; Pixel Data stays a view of the file's bytes.

It is a *shortcut, not a second reader*: :func:`read_plain_header` returns None for anything it does not fully
understand, and the caller then reads the file with pydicom as before (which also produces the error messages
for broken files). None is returned for: no preamble / ``DICM``; a transfer syntax other than implicit or
explicit VR little endian; a malformed or truncated element stream; a wanted element twice, out of order,
empty, with an unexpected VR or multiplicity; text outside printable ASCII (character sets, escape sequences);
and any element that needs pydicom's machinery (functional groups of enhanced objects, a Modality LUT Sequence,
float pixel data). Tests compare its results with pydicom's on every shipped pydicom test file.

Values match what the pipeline gets from pydicom for the same file: text with trailing spaces and NULs
removed (``str``; ImageType: a list of such values), US / SS as ``int``, IS as ``int``, DS as ``float`` (PixelSpacing: a list of two floats).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

PREAMBLE_BYTES = 128
MAGIC = b"DICM"  # after the preamble: a Part 10 file
# Elements whose explicit-VR length field is 4 bytes after 2 reserved ones (PS3.5 7.1.2); others have 2 bytes.
LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                             b"UV"})
SHORT_LENGTH_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
                              b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US"})
UNDEFINED_LENGTH = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
PIXEL_DATA = 0x7FE00010
MEDIA_STORAGE_SOP_CLASS, TRANSFER_SYNTAX = 0x00020002, 0x00020010  # the file meta UIDs the pipeline uses
PLAIN_SYNTAXES = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
META_PROBE_BYTES = 4096  # file meta groups are a few hundred bytes
MAX_NESTING = 32  # deeper sequences than this are left to pydicom (and are never seen in real files)

# keyword → (tag, accepted explicit VRs, value kind). "US|SS": the VR the file states, or in implicit VR the one
# PixelRepresentation implies, as pydicom resolves it.
HEADER_TAGS: dict[str, tuple[int, tuple[bytes, ...], str]] = {
    "ImageType": (0x00080008, (b"CS",), "texts"),
    "SOPClassUID": (0x00080016, (b"UI",), "text"),
    "SOPInstanceUID": (0x00080018, (b"UI",), "text"),
    "AccessionNumber": (0x00080050, (b"SH",), "text"),
    "Modality": (0x00080060, (b"CS",), "text"),
    "PatientName": (0x00100010, (b"PN",), "text"),
    "PatientID": (0x00100020, (b"LO",), "text"),
    "ImagerPixelSpacing": (0x00181164, (b"DS",), "spacing"),
    "StudyInstanceUID": (0x0020000D, (b"UI",), "text"),
    "SeriesInstanceUID": (0x0020000E, (b"UI",), "text"),
    "SamplesPerPixel": (0x00280002, (b"US",), "US"),
    "PhotometricInterpretation": (0x00280004, (b"CS",), "text"),
    "NumberOfFrames": (0x00280008, (b"IS",), "IS"),
    "Rows": (0x00280010, (b"US",), "US"),
    "Columns": (0x00280011, (b"US",), "US"),
    "PixelSpacing": (0x00280030, (b"DS",), "spacing"),
    "BitsAllocated": (0x00280100, (b"US",), "US"),
    "BitsStored": (0x00280101, (b"US",), "US"),
    "PixelRepresentation": (0x00280103, (b"US",), "US"),
    "PixelPaddingValue": (0x00280120, (b"US", b"SS"), "US|SS"),
    "PixelPaddingRangeLimit": (0x00280121, (b"US", b"SS"), "US|SS"),
    "RescaleIntercept": (0x00281052, (b"DS",), "DS"),
    "RescaleSlope": (0x00281053, (b"DS",), "DS"),
    "PixelData": (PIXEL_DATA, (b"OB", b"OW"), "bytes"),
}
# Present in the file → pydicom reads it: these need its sequence handling or pixel decoders. A plain header
# therefore knows them to be absent.
NEEDS_PYDICOM = {
    "ModalityLUTSequence": 0x00283000,
    "SharedFunctionalGroupsSequence": 0x52009229,
    "PerFrameFunctionalGroupsSequence": 0x52009230,
    "FloatPixelData": 0x7FE00008,
    "DoubleFloatPixelData": 0x7FE00009,
}
_NEEDS_PYDICOM_TAGS = frozenset(NEEDS_PYDICOM.values())
_KEYWORD_OF_TAG = {tag: keyword for keyword, (tag, _, _) in HEADER_TAGS.items()}
_PRINTABLE = re.compile(rb"[\x20-\x5b\x5d-\x7e]*")  # printable ASCII without the backslash (value separator)
_NUMBER = re.compile(rb" *[-+0-9.eE]+ *")
_TAG, _US, _SS = struct.Struct("<HH"), struct.Struct("<H"), struct.Struct("<h")
_LENGTH = struct.Struct("<I")
_IMPLICIT, _EXPLICIT = struct.Struct("<HHI"), struct.Struct("<HH2sH")  # tag, (VR,) length


class NotPlain(Exception):
    """The file needs pydicom: raised inside the walker, turned into None at the edge."""


@dataclass(frozen=True)
class FileMeta:
    """The two file meta attributes the pipeline asks of ``Dataset.file_meta``."""

    TransferSyntaxUID: str  # noqa: N815  (DICOM keyword, as pydicom spells it)
    MediaStorageSOPClassUID: str = ""  # noqa: N815

    def get(self, keyword: str, default: object = None) -> object:
        return getattr(self, keyword, default) or default


@dataclass(frozen=True)
class PlainHeader:
    """The header of a plain file, answering the Dataset lookups of the pixel pipeline.

    ``get``, ``in`` and attribute access behave as on a pydicom Dataset for the keywords of
    :data:`HEADER_TAGS` (values) and :data:`NEEDS_PYDICOM` (known absent). Any other keyword is a lookup this
    reader cannot answer, a programming error: it raises instead of quietly answering "absent".
    """

    file_meta: FileMeta
    values: dict[str, object]

    def get(self, keyword: str, default: object = None) -> object:
        return self.values[keyword] if self.__contains__(keyword) else default

    def __contains__(self, keyword: str) -> bool:
        if keyword in self.values:
            return True
        if keyword in HEADER_TAGS or keyword in NEEDS_PYDICOM:
            return False
        raise LookupError(f"{keyword} is not read by the plain DICOM header reader")

    def __getattr__(self, keyword: str) -> object:
        values = self.__dict__.get("values", {})
        if keyword in values:
            return values[keyword]
        raise AttributeError(keyword)


def read_plain_header(path: Path) -> PlainHeader | None:
    """The header of ``path`` if it is a plain uncompressed little-endian Part 10 file, else None.

    The transfer syntax is checked on the first bytes, so a compressed file (a JPEG 2000 study, a
    gigabyte tomosynthesis object) is not read twice, once here and once by pydicom.
    """
    try:
        with open(path, "rb") as stream:
            if meta_uid(stream.read(META_PROBE_BYTES), TRANSFER_SYNTAX) not in PLAIN_SYNTAXES:
                return None
            stream.seek(0)
            data = stream.read()
    except OSError:
        return None
    try:
        return parse_plain_header(data)
    except (NotPlain, struct.error, UnicodeDecodeError, ValueError):
        return None


def parse_plain_header(data: bytes) -> PlainHeader:
    """Parse a whole Part 10 file held in memory; raises :class:`NotPlain` (or struct / value errors)."""
    meta, position = read_meta(data)
    syntax = meta.get(TRANSFER_SYNTAX, "")
    if syntax not in PLAIN_SYNTAXES:
        raise NotPlain(f"transfer syntax {syntax}")
    raw = _read_top_level(data, position, implicit=syntax == ImplicitVRLittleEndian)
    return PlainHeader(FileMeta(syntax, meta.get(MEDIA_STORAGE_SOP_CLASS, "")), _convert(data, raw))


def meta_uid(head: bytes, tag: int) -> str | None:
    """A file meta UID (:data:`MEDIA_STORAGE_SOP_CLASS`, :data:`TRANSFER_SYNTAX`) from the first bytes of a
    Part 10 file; None when not plainly found there (no preamble, damaged, or a meta group longer than ``head``)."""
    try:
        return read_meta(head)[0].get(tag)
    except (NotPlain, struct.error, UnicodeDecodeError):
        return None


def read_meta(data: bytes) -> tuple[dict[int, str], int]:
    """The file meta group (always explicit VR little endian, PS3.10 7.1) of a Part 10 file held in ``data``:
    its two UIDs by tag, and the offset where the dataset starts."""
    if data[PREAMBLE_BYTES:PREAMBLE_BYTES + len(MAGIC)] != MAGIC:
        raise NotPlain("no preamble")
    meta: dict[int, str] = {}
    position = PREAMBLE_BYTES + len(MAGIC)
    while position + 8 <= len(data) and _tag_at(data, position) >> 16 == 0x0002:
        tag, _vr, start, end, position = _next_element(data, position, implicit=False, depth=0)
        if tag in (MEDIA_STORAGE_SOP_CLASS, TRANSFER_SYNTAX):
            meta[tag] = _text(data[start:end], b"UI")
    return meta, position


def _read_top_level(data: bytes, position: int, implicit: bool) -> dict[int, tuple[bytes | None, int, int]]:
    """Wanted elements as (VR, value start, value end) by tag, up to and including Pixel Data (which must be there)."""
    raw: dict[int, tuple[bytes | None, int, int]] = {}
    previous = -1
    while position + 8 <= len(data):
        tag, vr, start, end, position = _next_element(data, position, implicit, depth=0)
        if tag <= previous:
            raise NotPlain("elements out of order or repeated")
        previous = tag
        if tag in _NEEDS_PYDICOM_TAGS:
            raise NotPlain(f"element {tag:08X} needs pydicom")
        if tag in _KEYWORD_OF_TAG:
            raw[tag] = (vr, start, end)
            if tag == PIXEL_DATA:
                return raw
    # a file cut before its Pixel Data ends (or never had one): pydicom gives the reason
    raise NotPlain("no complete Pixel Data element")


def _next_element(data: bytes, position: int, implicit: bool,
                  depth: int) -> tuple[int, bytes | None, int, int, int]:
    """(tag, VR or None in implicit VR, value start, value end, next element's offset) of the element at
    ``position``. A sequence of undefined length is skipped item by item (its contents are never needed) and
    reported with an empty value."""
    if implicit:
        group, element, length = _IMPLICIT.unpack_from(data, position)
        vr, start = None, position + 8
    else:
        group, element, vr, length = _EXPLICIT.unpack_from(data, position)
        start = position + 8
        if vr in LONG_LENGTH_VRS:
            (length,), start = _LENGTH.unpack_from(data, start), position + 12
        elif vr not in SHORT_LENGTH_VRS:  # e.g. an implicit-VR dataset under an explicit-VR syntax
            raise NotPlain(f"no VR at byte {position}")
    tag = group << 16 | element
    if group == 0xFFFE:
        raise NotPlain(f"delimiter {tag:08X} where an element was expected")
    if length == UNDEFINED_LENGTH:
        if vr not in (None, b"SQ", b"UN") or tag == PIXEL_DATA:
            raise NotPlain("undefined length outside a sequence (encapsulated pixel data)")
        # an undefined-length UN is a sequence encoded in implicit VR (PS3.5 6.2.2)
        return tag, vr, start, start, _skip_items(data, start, implicit or vr == b"UN", depth + 1)
    if start + length > len(data):
        raise NotPlain(f"element {tag:08X} runs past the end of the file")
    return tag, vr, start, start + length, start + length


def _skip_items(data: bytes, position: int, implicit: bool, depth: int) -> int:
    """Skip the items of an undefined-length sequence starting at ``position``; the offset after its end."""
    if depth > MAX_NESTING:
        raise NotPlain("sequences nested too deep")
    while True:
        group, element, length = _IMPLICIT.unpack_from(data, position)
        tag = group << 16 | element
        position += 8
        if tag == SEQUENCE_END:
            return position
        if tag != ITEM:
            raise NotPlain(f"{tag:08X} inside a sequence where an item was expected")
        if length != UNDEFINED_LENGTH:
            position += length
            continue
        while _tag_at(data, position) != ITEM_END:
            position = _next_element(data, position, implicit, depth)[4]
        position += 8  # the item delimiter and its zero length


def _tag_at(data: bytes, position: int) -> int:
    group, element = _TAG.unpack_from(data, position)
    return group << 16 | element


def _convert(data: bytes, raw: dict[int, tuple[bytes | None, int, int]]) -> dict[str, object]:
    """Wanted elements as the Python values the pipeline reads from pydicom; Pixel Data as a memoryview."""
    values: dict[str, object] = {}
    signed = _pixel_representation(data, raw)
    for tag, (vr, start, end) in raw.items():
        keyword = _KEYWORD_OF_TAG[tag]
        _, accepted, kind = HEADER_TAGS[keyword]
        if vr is not None and vr not in accepted:
            raise NotPlain(f"{keyword} has VR {vr!r}")
        value = data[start:end] if kind != "bytes" else memoryview(data)[start:end]
        if kind == "bytes":
            values[keyword] = value
        elif kind == "text":
            values[keyword] = _text(value, accepted[0])
        elif kind == "texts":  # several values: a list, as pydicom's MultiValue compares
            values[keyword] = [_text(part, accepted[0], strip=False)
                               for part in value.rstrip(b" \x00").split(b"\\")]
        elif kind in ("US", "US|SS"):
            is_signed = vr == b"SS" if vr is not None else (kind == "US|SS" and signed)
            values[keyword] = _integer(value, keyword, is_signed)
        elif kind == "IS":
            values[keyword] = int(_number(value, keyword))
        elif kind == "DS":
            values[keyword] = float(_number(value, keyword))
        else:  # spacing: two DS values
            parts = value.rstrip(b" \x00").split(b"\\")
            if len(parts) != 2:
                raise NotPlain(f"{keyword} has {len(parts)} values")
            values[keyword] = [float(_number(part, keyword)) for part in parts]
    return values


def _pixel_representation(data: bytes, raw: dict[int, tuple[bytes | None, int, int]]) -> bool:
    """Whether PixelRepresentation says signed: it decides US or SS for implicit-VR padding values."""
    _, start, end = raw.get(HEADER_TAGS["PixelRepresentation"][0], (None, 0, 0))
    return end - start == 2 and _US.unpack_from(data, start)[0] == 1


def _integer(value: bytes, keyword: str, signed: bool) -> int:
    if len(value) != 2:
        raise NotPlain(f"{keyword} has {len(value)} bytes (empty, or several values)")
    return (_SS if signed else _US).unpack(value)[0]


def _number(value: bytes, keyword: str) -> str:
    text = value.rstrip(b" \x00")
    if not _NUMBER.fullmatch(text):
        raise NotPlain(f"{keyword} is not one number")
    return text.decode("ascii")


def _text(value: bytes, vr: bytes, strip: bool = True) -> str:
    """One ASCII text value without trailing spaces and NULs, as pydicom decodes it (values of a multi-valued
    element keep their own spaces: pydicom strips the element's padding only)."""
    text = value.rstrip(b" \x00") if strip else value
    if not _PRINTABLE.fullmatch(text):
        raise NotPlain(f"{vr!r} text outside printable ASCII, or several values")
    return text.decode("ascii")
