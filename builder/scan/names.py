"""Import names and the distributions that provide them.

The answer comes from the files of the resolved wheels (`wheel_modules`), so `cv2` is
`opencv-python-headless` when that is what the requirements bring. An import no resolved
wheel provides is guessed: from `KNOWN_DISTRIBUTIONS`, the well-known mismatches, else from
its own name. Nothing here reads the running interpreter's installed packages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from packaging.utils import canonicalize_name

# Import names whose distribution is named differently (guesses: a resolved wheel that provides
# the name wins). Dotted keys for namespace packages (`google` belongs to many distributions).
KNOWN_DISTRIBUTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "Crypto": ("pycryptodome",),
        "OpenSSL": ("pyopenssl",),
        "PIL": ("pillow",),
        "attr": ("attrs",),
        "bs4": ("beautifulsoup4",),
        "cv2": ("opencv-python", "opencv-python-headless"),
        "dateutil": ("python-dateutil",),
        "decord": ("decord", "decord2", "eva-decord"),
        "docx": ("python-docx",),
        "dotenv": ("python-dotenv",),
        "faiss": ("faiss-cpu", "faiss-gpu"),
        "ffmpeg": ("ffmpeg-python", "python-ffmpeg"),
        "fitz": ("pymupdf",),
        "flash_attn": ("flash-attn",),
        "git": ("gitpython",),
        "google.protobuf": ("protobuf",),
        "jose": ("python-jose",),
        "jwt": ("pyjwt",),
        "magic": ("python-magic",),
        "multipart": ("python-multipart",),
        "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
        "optimum.quanto": ("optimum-quanto",),
        "pkg_resources": ("setuptools",),
        "pptx": ("python-pptx",),
        "ruamel.yaml": ("ruamel-yaml",),
        "serial": ("pyserial",),
        "skimage": ("scikit-image",),
        "sklearn": ("scikit-learn",),
        "usb": ("pyusb",),
        "yaml": ("pyyaml",),
        "zmq": ("pyzmq",),
    }
)


def wheel_modules(files: Iterable[str]) -> tuple[str, ...]:
    """The importable names a wheel installs, from its file list (what RECORD lists): top-level
    modules, packages and extensions, and `a.b` for a package inside a namespace directory."""
    paths = {_installed_path(f) for f in files}
    paths.discard("")
    names: set[str] = set()
    for path in paths:
        head, _, rest = path.partition("/")
        if head in ("..", "__pycache__") or head.endswith((".dist-info", ".egg-info")):
            continue
        if not rest:
            if head.endswith(".py") and not head.startswith("__editable__"):
                names.add(head[:-3])
            elif head.endswith((".so", ".pyd")):
                names.add(head.split(".")[0])
        elif f"{head}/__init__.py" in paths:
            names.add(head)
        elif (sub := rest.partition("/")[0]) and f"{head}/{sub}/__init__.py" in paths:
            names.add(f"{head}.{sub}")
        elif "/" not in rest and rest.endswith((".py", ".so", ".pyd")) and head.isidentifier():
            names.add(f"{head}.{rest.split('.')[0]}")  # a module in a namespace directory
    return tuple(sorted(n for n in names if all(p.isidentifier() for p in n.split("."))))


def _installed_path(name: str) -> str:
    """Where a wheel member lands: `x.data/purelib/a/b.py` -> `a/b.py`; other data: ""."""
    head, _, rest = name.partition("/")
    if head.endswith(".data"):
        kind, _, path = rest.partition("/")
        return path if kind in ("purelib", "platlib") else ""
    return name


@dataclass(frozen=True)
class Mapped:
    name: str  # the import name matched: a prefix of the module
    distributions: tuple[str, ...]
    source: str  # "wheel", "table" or "name"


def provided(modules: Mapping[str, tuple[str, ...] | None]) -> dict[str, tuple[str, ...]]:
    """Import name -> the distributions whose wheels provide it, from dist -> modules."""
    out: dict[str, set[str]] = {}
    for dist, names in modules.items():
        for name in names or ():
            out.setdefault(name, set()).add(canonicalize_name(dist))
    return {name: tuple(sorted(dists)) for name, dists in out.items()}


def distributions_for(module: str, providers: Mapping[str, tuple[str, ...]]) -> Mapped:
    """The distributions behind a third-party module: the longest prefix a resolved wheel
    provides, else the known table (dotted keys first), else the import name itself."""
    parts = module.split(".")
    prefixes = [".".join(parts[:end]) for end in range(len(parts), 0, -1)]
    for prefix in prefixes:
        if prefix in providers:
            return Mapped(prefix, providers[prefix], "wheel")
    for prefix in prefixes:
        if prefix in KNOWN_DISTRIBUTIONS:
            return Mapped(prefix, KNOWN_DISTRIBUTIONS[prefix], "table")
    return Mapped(parts[0], (canonicalize_name(parts[0]),), "name")
