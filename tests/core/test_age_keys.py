"""dr.core.age_keys: recipients and identity files in age's own formats, checked against keys the real age-keygen
makes (C2SP age spec: ``age1`` + bech32 public keys, ``AGE-SECRET-KEY-1`` + bech32 identities, one per line in an
identity file with ``#`` comments)."""

from __future__ import annotations

import subprocess

import pyrage
import pytest
from pyrage import x25519

from dr.core.age_keys import (
    AgeKeyError,
    parse_identities,
    parse_recipient,
    public_keys,
    recipients,
    split_recipients,
)
from tests.support.snapshots import age_keygen
from tests.support.tools import require_binary


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("age")
    return [age_keygen(d, f"key{i}.txt") for i in range(3)]


def _secret(key) -> str:
    return next(ln for ln in key.identity_text.splitlines() if ln.startswith("AGE-SECRET-KEY-1"))


def test_age_keygen_recipient_is_accepted_and_stripped(keys):
    assert parse_recipient(keys[0].recipient) == keys[0].recipient
    assert parse_recipient(f"  {keys[0].recipient}\n") == keys[0].recipient


@pytest.mark.parametrize("case", [str, str.lower])
def test_an_identity_is_refused_as_a_recipient_without_echoing_it(keys, case):
    secret = case(_secret(keys[0]))
    with pytest.raises(AgeKeyError, match="identity") as ei:
        parse_recipient(secret, where="ageRecipients item 0")
    assert "ageRecipients item 0" in str(ei.value)
    assert secret not in str(ei.value) and secret[16:] not in str(ei.value)


@pytest.mark.parametrize("bad", [
    "", "   ", "age", "age1", "age1notbech32!!", "AGE1QQQQ",
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    "-----BEGIN PGP PUBLIC KEY BLOCK-----",
])
def test_non_recipients_are_refused(bad):
    with pytest.raises(AgeKeyError):
        parse_recipient(bad)


def test_a_recipient_with_a_bad_checksum_is_refused(keys):
    good = keys[0].recipient
    flipped = good[:-1] + ("q" if good[-1] != "q" else "p")
    with pytest.raises(AgeKeyError, match="not a valid age public key"):
        parse_recipient(flipped)
    with pytest.raises(AgeKeyError):
        parse_recipient(good[:-3])  # cut short


def test_recipients_keep_order_drop_duplicates_and_name_the_bad_item(keys):
    rs = recipients([keys[1].recipient, keys[0].recipient, keys[1].recipient])
    assert [str(r) for r in rs] == [keys[1].recipient, keys[0].recipient]
    assert all(isinstance(r, x25519.Recipient) for r in rs)
    with pytest.raises(AgeKeyError, match="item 1"):
        recipients([keys[0].recipient, "age1broken"], where="DR_AGE_RECIPIENTS")


def test_split_recipients_takes_commas_and_whitespace(keys):
    a, b, c = (k.recipient for k in keys)
    assert split_recipients(f"{a},{b}") == [a, b]
    assert split_recipients(f" {a} ,\n{b}  {c},, ") == [a, b, c]
    assert split_recipients("") == [] and split_recipients(" , ") == []


def test_age_keygen_identity_file_is_parsed_with_its_comments(keys):
    text = keys[0].identity_text
    assert text.startswith("# created:")  # what age-keygen -o writes: comments, then the key
    ids = parse_identities(text)
    assert public_keys(ids) == [keys[0].recipient]


def test_identity_file_with_several_keys_blank_lines_and_crlf(keys):
    text = "\r\n".join(["# mine", _secret(keys[0]), "", "   ", "# old one", "  " + _secret(keys[1]) + "  ", ""])
    assert public_keys(parse_identities(text)) == [keys[0].recipient, keys[1].recipient]


def test_parsed_identities_decrypt_what_the_age_cli_encrypted(keys):
    ids = parse_identities(keys[2].identity_text)
    ct = subprocess.run([require_binary("age"), "-r", keys[2].recipient], input=b"hello", check=True,
                        capture_output=True).stdout
    assert pyrage.decrypt(ct, ids) == b"hello"


def test_a_public_key_in_the_identity_file_is_explained(keys):
    with pytest.raises(AgeKeyError, match="public key") as ei:
        parse_identities(f"# oops\n{keys[0].recipient}\n", where="--identity k.txt")
    assert "line 2" in str(ei.value) and "--identity k.txt" in str(ei.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# created: 2026-01-01\n# public key: age1xyz\n"])
def test_an_identity_file_without_identities_is_refused(text):
    with pytest.raises(AgeKeyError, match="no age identity"):
        parse_identities(text)


def test_garbage_in_the_identity_file_is_refused():
    with pytest.raises(AgeKeyError, match="line 1"):
        parse_identities("-----BEGIN OPENSSH PRIVATE KEY-----\n")


def test_a_damaged_identity_is_refused_without_echoing_it(keys):
    secret = _secret(keys[0])
    damaged = secret[:-1] + ("Q" if secret[-1] != "Q" else "P")
    with pytest.raises(AgeKeyError, match="line 3") as ei:
        parse_identities(f"# a\n\n{damaged}\n")
    assert damaged not in str(ei.value) and damaged[16:40] not in str(ei.value)
