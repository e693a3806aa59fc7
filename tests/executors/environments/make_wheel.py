"""Writes a tiny pure-Python wheel for the environment tests: make_wheel.py DIR NAME VERSION.

The tests install it with pip --no-index --find-links DIR, so they need no network. A wheel is a zip
with the package, its METADATA and WHEEL files, and a RECORD of every file's hash.
"""
import base64
import hashlib
import pathlib
import sys
import zipfile


def digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def main() -> None:
    out_dir, name, version = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: amlnode-tests\n"
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={digest(text.encode())},{len(text.encode())}"
              for path, text in files.items()]
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_dir / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


if __name__ == "__main__":
    main()
