"""Protected health information: pseudonymous group keys, and file paths that may carry a patient's identity.

DICOM identifiers (PatientName, PatientID, AccessionNumber) never leave the reader as they are: grouping keys are
salted hashes (:func:`pseudonymise`). Paths are the other leak: PACS and CD exports name folders and files after
the patient (``DOE^JANE_1234567/IM0001``). :class:`PathRedactor` replaces every path component that contains one of
the identifiers found in the folder's files by a salted hash of that component, before a path reaches the
manifest, a report or a log line. The hash keeps components distinct (two patients' folders stay two folders).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

DEFAULT_SALT = "ssl-domain-transfer/v1"
MIN_TOKEN_CHARS = 3  # shorter identifier parts ("A", "12") would match nearly every path component
_SEPARATORS = re.compile(r"[^0-9a-z]+")
_WORDS = re.compile(r"[^\s:()\[\]'\",;]+")  # a path or a word of a reason line


def pseudonymise(key: str, salt: str) -> str:
    """Salted SHA-256 of a patient / study key; the raw value never leaves this function."""
    return hashlib.sha256(f"{salt}\x00{key}".encode()).hexdigest()[:16]


def phi_salt() -> str:
    """Sites set PIPELINE_PHI_SALT so their hashes cannot be reversed by hashing known IDs."""
    return os.environ.get("PIPELINE_PHI_SALT", DEFAULT_SALT)


def _normalised(text: str) -> str:
    """Lower case, every run of separators (``^``, ``_``, spaces, ``-``, ``.``) as one space, padded by spaces."""
    return f" {_SEPARATORS.sub(' ', text.lower()).strip()} "


def identifier_tokens(values: Iterable[str]) -> set[str]:
    """What a path component is searched for: each whole identifier and each part of a person name
    (``DOE^JANE`` → ``doe jane``, ``doe``, ``jane``), normalised, of at least :data:`MIN_TOKEN_CHARS` characters."""
    tokens: set[str] = set()
    for value in values:
        whole = _normalised(value).strip()
        parts = whole.split() if "^" in value or " " in value.strip() else []
        tokens |= {token for token in (whole, *parts) if len(token.replace(" ", "")) >= MIN_TOKEN_CHARS}
    return tokens


class PathRedactor:
    """Replaces path components that contain a patient identifier of the folder by ``redacted-<hash>``.

    A component matches when, case and separators ignored, it *contains* an identifier or a name part of at
    least :data:`MIN_TOKEN_CHARS` characters (``DOE^JANE_1234567`` matches PatientName ``DOE^JANE`` and PatientID
    ``1234567``), *is* an identifier of any length (a folder ``42`` for PatientID 42), or holds every part of a
    person name as its words in any order (``WU_LI`` for ``LI^WU``). Over-matching only makes a harmless name
    opaque; under-matching leaks.
    """

    def __init__(self, identifiers: Iterable[str], salt: str) -> None:
        identifiers = [value for value in identifiers if value.strip()]
        self.tokens = sorted({token.replace(" ", "") for token in identifier_tokens(identifiers)})
        self.whole = {_normalised(value).replace(" ", "") for value in identifiers}
        self.names = [frozenset(_normalised(value).split()) for value in identifiers
                      if "^" in value or " " in value.strip()]
        self.salt = salt
        # indexes, so that a component costs O(its length), not O(identifiers): an archive of 2,500 patients
        # has ~10,000 identifiers, and every chip's path is redacted
        self._tokens_by_length: dict[int, set[str]] = {}
        for token in self.tokens:
            self._tokens_by_length.setdefault(len(token), set()).add(token)
        self._names_by_word: dict[str, list[frozenset[str]]] = {}
        for name in self.names:
            if name:
                self._names_by_word.setdefault(min(name), []).append(name)
        self._verdicts: dict[str, bool] = {}

    def component_has_identifier(self, component: str) -> bool:
        verdict = self._verdicts.get(component)
        if verdict is None:
            verdict = self._verdicts[component] = self._has_identifier(component)
        return verdict

    def _has_identifier(self, component: str) -> bool:
        words = _normalised(component).split()
        squeezed, present = "".join(words), set(words)
        return (squeezed in self.whole or self._contains_token(squeezed)
                or any(name <= present for word in present for name in self._names_by_word.get(word, ())))

    def _contains_token(self, text: str) -> bool:
        """Whether some token is a substring of ``text``: each of its substrings of a token length is looked up."""
        return any(text[start:start + length] in tokens for length, tokens in self._tokens_by_length.items()
                   for start in range(len(text) - length + 1))

    def path(self, relative: str) -> str:
        """``relative`` (``/``-separated) with each identifying component replaced."""
        if not (self.tokens or self.whole):
            return relative
        return "/".join(f"redacted-{pseudonymise(part, self.salt)[:10]}" if self.component_has_identifier(part)
                        else part for part in relative.split("/"))

    def text(self, line: str) -> str:
        """A reason line with every word or path in it redacted as :meth:`path` redacts a path (a reason names
        its file, and sometimes a side file: ``masks/<file>.png``)."""
        if not (self.tokens or self.whole):
            return line
        return _WORDS.sub(lambda match: self.path(match.group()), line)
