"""Records the public API of a release: `python scripts/release_protos.py TAG`
(e.g. v0.2.0), run when TAG is made. Writes TAG to protos/RELEASE and the
protos as they are now to protos/releases/TAG.binpb, removing the image of
the release before (git keeps it).

tests/unit/test_proto_compat.py checks the protos against that release with
`buf breaking`: against the git tag when the clone has it, else against the
committed image, since a clone may lack tags (a shallow CI checkout).
"""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
RELEASES = PROTOS / "releases"
_TAG = re.compile(r"v\d+\.\d+\.\d+([-.+][0-9A-Za-z.-]+)?")


def main(tag: str) -> pathlib.Path:
    """Builds the image of the current protos for `tag`; returns its path."""
    if not _TAG.fullmatch(tag):
        raise SystemExit(f"release tag {tag!r} must look like v1.2.3")
    image = RELEASES / f"{tag}.binpb"
    RELEASES.mkdir(exist_ok=True)
    buf = pathlib.Path(sys.executable).with_name("buf")
    # No source info: comments and line numbers are not the API, and leaving
    # them out keeps the image small and unchanged by comment edits.
    subprocess.run(
        [str(buf), "build", "protos", "--exclude-source-info", "-o", str(image)],
        cwd=ROOT,
        check=True,
    )
    for old in RELEASES.glob("*.binpb"):
        if old != image:
            old.unlink()
    (PROTOS / "RELEASE").write_text(f"{tag}\n")
    return image


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python scripts/release_protos.py TAG")
    print(f"wrote {main(sys.argv[1]).relative_to(ROOT)} and protos/RELEASE")
