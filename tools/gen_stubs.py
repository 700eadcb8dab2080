"""Generate the Python stubs of the voxwire contracts into ``voxwire/v1`` and ``voxwire/edge/v1``.

    python -m tools.gen_stubs           # regenerate
    python -m tools.gen_stubs --check   # fail if the committed stubs are stale

Messages come from protoc (bundled with grpcio-tools, whose pinned version fixes the gencode
version), services from grpcio-tools' gRPC plugin, and ``.pyi`` types from mypy-protobuf.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
# One generated package per proto package: the inference contract and the edge's messages.
PACKAGE_DIRS = (Path("voxwire") / "v1", Path("voxwire") / "edge" / "v1")
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[str]:
    return sorted(
        str(p.relative_to(PROTO_ROOT))
        for package in PACKAGE_DIRS
        for p in (PROTO_ROOT / package).glob("*.proto")
    )


def generate(out_dir: Path) -> None:
    """Run protoc into ``out_dir``. Raises RuntimeError when protoc fails."""
    # mypy-protobuf's plugins live next to the interpreter in the virtualenv.
    bin_dir = Path(sys.executable).parent
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    well_known = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *proto_files(),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed; see the messages above")


def generated(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(GENERATED_SUFFIXES)}


def stale_files(fresh_dir: Path, target: Path) -> list[str]:
    fresh = generated(fresh_dir)
    committed = generated(target) if target.exists() else set()
    return sorted(
        name
        for name in fresh | committed
        if name not in fresh
        or name not in committed
        or not filecmp.cmp(fresh_dir / name, target / name, shallow=False)
    )


def install(fresh_dir: Path, target: Path) -> int:
    fresh = generated(fresh_dir)
    target.mkdir(parents=True, exist_ok=True)
    for name in generated(target) - fresh:
        (target / name).unlink()
    for name in sorted(fresh):
        shutil.copyfile(fresh_dir / name, target / name)
    return len(fresh)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        if args.check:
            stale = [
                str(package / name)
                for package in PACKAGE_DIRS
                for name in stale_files(Path(tmp) / package, ROOT / package)
            ]
            if stale:
                print("stale generated stubs (run `make stubs`):", *stale, sep="\n  ")
                return 1
            print(f"stubs up to date ({len(PACKAGE_DIRS)} packages)")
            return 0
        for package in PACKAGE_DIRS:
            count = install(Path(tmp) / package, ROOT / package)
            print(f"wrote {count} files to {package}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
