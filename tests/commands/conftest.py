from sandbox.testing import sandbox, sandbox_factory, sandbox_workdir  # noqa: F401  (pytest fixtures)
