"""The docs' exit-code table is the code's table."""

import re

from dr.core.errors import (
    CLASS_CODES,
    EXIT_CLASS_MEANING,
    EXIT_CODE_MEANING,
    EXIT_CODES,
    DRError,
    ExitClass,
    ExitCode,
    exit_code_table,
)
from tests.docs.markdown import section


def test_readme_table_matches_exit_codes():
    _, table = section("exit-codes")  # the README's table, now in docs/REFERENCE.md
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| `(\w+)` \| (.+?) \|$", table, re.M)
    assert [(int(c), n, m) for c, n, _, m in rows] == [(int(c), c.name, m) for c, m in EXIT_CODE_MEANING.items()]
    assert [k for _, _, k, _ in rows] == [k.value for k, _ in EXIT_CODES.values()]
    assert exit_code_table() in table  # the tables as `python -m dr.core.errors` prints them, byte for byte


def test_every_code_has_one_class_and_every_class_a_meaning():
    assert set(EXIT_CODES) == set(ExitCode)
    assert sorted(c for codes in CLASS_CODES.values() for c in codes) == sorted(ExitCode)  # each in exactly one
    assert set(EXIT_CLASS_MEANING) == set(ExitClass) == {k for k, _ in EXIT_CODES.values()}
    assert len(ExitClass) <= 10 < len(ExitCode)  # a handful for scripts, over distinct codes for people


def test_every_code_has_a_meaning_and_codes_are_distinct():
    assert set(EXIT_CODE_MEANING) == set(ExitCode)
    assert len({int(c) for c in ExitCode}) == len(ExitCode)


def test_every_error_class_maps_to_a_code():
    def walk(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from walk(sub)

    for cls in walk(DRError):
        assert isinstance(cls.exit_code, ExitCode), cls
