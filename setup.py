"""The one part of the build pyproject.toml cannot declare: the record codec's C loops
(storage/_codec.c). When no compiler or no Python headers are there, the build warns and installs
without it, and the pure-Python codec runs (storage/compiled_codec.py says so once at start).
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

BUILD_ERRORS = (CCompilerError, CompileError, ExecError, LinkError, PlatformError, OSError)


class BuildExtOrSkip(build_ext):
    """Build each extension the machine can; drop one that fails. (Extension(optional=True)
    is not enough: setuptools' strict editable install then fails looking for its file.)"""

    def build_extensions(self) -> None:
        self.check_extensions_list(self.extensions)
        for ext in list(self.extensions):
            try:
                self.build_extension(ext)
            except BUILD_ERRORS as err:
                self.warn(
                    f"could not build {ext.name} ({err}); the pure-Python record codec will "
                    "run instead (several times slower per record)"
                )
                self.extensions.remove(ext)


setup(
    ext_modules=[
        Extension(
            "strom.storage._codec",
            ["storage/_codec.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        )
    ],
    cmdclass={"build_ext": BuildExtOrSkip},
)
