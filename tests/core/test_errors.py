"""The docs' exit-code table is the code's table."""

import re

from dr.core.errors import EXIT_CODE_MEANING, DRError, ExitCode
from tests.docs.markdown import section


def test_readme_table_matches_exit_codes():
    _, table = section("exit-codes")  # the README's table, now in docs/REFERENCE.md
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (.+?) \|$", table, re.M)
    assert [(int(c), n, m) for c, n, m in rows] == [(int(c), c.name, m) for c, m in EXIT_CODE_MEANING.items()]


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
