"""age keys: parse recipients (public keys, the only kind the stack holds) and identity files (kept offline).

pyrage does the parsing (bech32, the X25519 point); nothing here is hand-rolled. The formats are age's own
(C2SP age spec, https://age-encryption.org/v1): a recipient is ``age1`` + bech32, an identity is
``AGE-SECRET-KEY-1`` + bech32, and an identity file holds one identity per line, with ``#`` comments and blank lines
(what ``age-keygen -o key.txt`` writes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pyrage import x25519

RECIPIENT_PREFIX = "age1"
IDENTITY_PREFIX = "AGE-SECRET-KEY-1"


class AgeKeyError(ValueError):
    """A key that is not what it must be; the message names where it came from and what to do."""


def parse_recipient(text: str, *, where: str = "age recipient") -> str:
    """``text`` stripped, when it is an age X25519 public key; else ``AgeKeyError``. An identity is refused with a
    message saying so, because it must never be stored in the stack or passed around as a recipient."""
    value = text.strip()
    if value.upper().startswith(IDENTITY_PREFIX):
        raise AgeKeyError(f"{where} is an age identity (a secret key), not a public key: keep it offline and give the "
                          "recipient `age-keygen -y` prints for it")
    if not value.startswith(RECIPIENT_PREFIX):
        raise AgeKeyError(f"{where} {value[:12]!r}... is not an age public key (they start with 'age1'); "
                          "make one with `age-keygen -o key.txt` and use the public key it prints")
    try:
        x25519.Recipient.from_str(value)
    except Exception as exc:  # pyrage raises its own RecipientError or ValueError, depending on the fault
        raise AgeKeyError(f"{where} {value[:12]}... is not a valid age public key ({exc}); copy it again from "
                          "`age-keygen -y key.txt`") from exc
    return value


def recipients(texts: Iterable[str], *, where: str = "age recipients") -> list[x25519.Recipient]:
    """Parsed recipients for pyrage, in order, duplicates dropped."""
    out: list[x25519.Recipient] = []
    seen: set[str] = set()
    for i, t in enumerate(texts):
        value = parse_recipient(t, where=f"{where} item {i}")
        if value not in seen:
            seen.add(value)
            out.append(x25519.Recipient.from_str(value))
    return out


def split_recipients(text: str) -> list[str]:
    """A comma- or whitespace-separated list (``DR_AGE_RECIPIENTS``) as a list of strings."""
    return [t for t in text.replace(",", " ").split() if t]


def parse_identities(text: str, *, where: str = "age identity file") -> list[x25519.Identity]:
    """The X25519 identities in an identity file's text (``#`` comments and blank lines skipped)."""
    out: list[x25519.Identity] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.upper().startswith(IDENTITY_PREFIX):
            raise AgeKeyError(f"{where} line {n} is not an age identity (AGE-SECRET-KEY-1...): "
                              + ("it is a public key; name the file `age-keygen` wrote, which holds the secret key"
                                 if line.startswith(RECIPIENT_PREFIX) else "point at the file `age-keygen -o` wrote"))
        try:
            out.append(x25519.Identity.from_str(line))
        except Exception as exc:
            raise AgeKeyError(f"{where} line {n} is not a valid age identity ({type(exc).__name__}); "
                              "check the file is the one `age-keygen -o` wrote") from exc
    if not out:
        raise AgeKeyError(f"{where} holds no age identity; point at the file `age-keygen -o` wrote")
    return out


def public_keys(identities: Sequence[x25519.Identity]) -> list[str]:
    return [str(i.to_public()) for i in identities]
