"""Build the installable module: dist/jobgate.zip holding the top-level folder `jobgate/`.

PrestaShop's Module Manager ("Upload a module") requires exactly that layout: one folder
named after the module. Entries are sorted and dated 1980-01-01, so the same sources give
byte-identical zips. Usage: python integrations/prestashop/build_zip.py [OUTPUT]
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODULE_DIR = HERE / "jobgate"
DEFAULT_OUTPUT = HERE.parent.parent / "dist" / "jobgate.zip"
_SKIPPED = {".DS_Store", "__pycache__"}


def build(output: Path = DEFAULT_OUTPUT) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    files = sorted(p for p in MODULE_DIR.rglob("*") if p.is_file() and not _SKIPPED & set(p.parts))
    with zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            name = f"{MODULE_DIR.name}/{path.relative_to(MODULE_DIR).as_posix()}"
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return output


if __name__ == "__main__":
    built = build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT)
    sys.stdout.write(f"{built}\n")
