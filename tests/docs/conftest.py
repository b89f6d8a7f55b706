from sandbox.testing import sandbox, sandbox_factory  # noqa: F401  (pytest fixtures)
