"""Path redaction: the indexed matcher against the rule written naively, on identifiers of many patients."""

from __future__ import annotations

import random
import string

from pipeline.ingest.phi import PathRedactor, _normalised


def naive_has_identifier(redactor: PathRedactor, component: str) -> bool:
    """The documented rule, one identifier at a time: is an identifier, contains a token, or holds a whole name."""
    words = _normalised(component).split()
    squeezed = "".join(words)
    return (squeezed in redactor.whole or any(token in squeezed for token in redactor.tokens)
            or any(name and name <= set(words) for name in redactor.names))


def _identifiers(rng: random.Random, patients: int) -> list[str]:
    def word(k: int) -> str:
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(k))

    values = []
    for _ in range(patients):
        values += [f"{word(rng.randint(2, 7))}^{word(rng.randint(2, 6))}", str(rng.randint(1, 10**7)),
                   f"ACC{rng.randint(1, 10**5)}", str(rng.randint(1, 99))]
    return values


def test_indexed_matcher_equals_the_naive_rule():
    rng = random.Random(3)
    identifiers = _identifiers(rng, 300)
    redactor = PathRedactor(identifiers, "salt")
    components = []
    for value in rng.sample(identifiers, 200):  # identifiers inside components, in other case and separators
        components += [f"{value.lower().replace('^', '_')}_{rng.randint(0, 9999)}", f"IM{value[-4:]}",
                       "_".join(reversed(value.split("^")))]
    components += ["".join(rng.choice(string.ascii_letters + string.digits + "_-. ") for _ in range(rng.randint(1, 24)))
                   for _ in range(2000)]
    verdicts = [redactor.component_has_identifier(c) for c in components]
    assert verdicts == [naive_has_identifier(redactor, c) for c in components]
    assert 100 < sum(verdicts) < len(components)  # both outcomes are exercised
    assert verdicts == [redactor.component_has_identifier(c) for c in components]  # memoised answers agree


def test_path_redacts_the_patient_folder_only():
    redactor = PathRedactor(["DOE^JANE", "1234567", "42", "LI^WU"], "salt")
    parts = redactor.path("DOE^JANE_1234567/IM0001").split("/")
    assert parts[0].startswith("redacted-") and parts[1] == "IM0001"
    assert redactor.path("42/x.dcm").startswith("redacted-") and redactor.path("420/x.dcm") == "420/x.dcm"
    assert redactor.path("WU_LI/x.dcm").startswith("redacted-")
