"""Generate the Python stubs of the voxwire contract into ``voxwire/v1``.

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
PACKAGE_DIR = Path("voxwire") / "v1"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[str]:
    return sorted(
        str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    target = ROOT / PACKAGE_DIR
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh_dir = Path(tmp) / PACKAGE_DIR
        fresh = generated(fresh_dir)
        if args.check:
            committed = generated(target) if target.exists() else set()
            stale = sorted(
                name
                for name in fresh | committed
                if name not in fresh
                or name not in committed
                or not filecmp.cmp(fresh_dir / name, target / name, shallow=False)
            )
            if stale:
                print("stale generated stubs (run `make stubs`):", *stale, sep="\n  ")
                return 1
            print(f"stubs up to date ({len(fresh)} files)")
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for name in generated(target) - fresh:
            (target / name).unlink()
        for name in sorted(fresh):
            shutil.copyfile(fresh_dir / name, target / name)
        print(f"wrote {len(fresh)} files to {PACKAGE_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
