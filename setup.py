"""The one part of the build pyproject.toml cannot declare: the record codec's C loops
(storage/_codec.c) as an optional extension. When no compiler or no Python headers are there,
setuptools warns and installs without it, and the pure-Python codec runs (storage/compiled_codec.py
says so once at start). Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "strom.storage._codec",
            ["storage/_codec.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ]
)
