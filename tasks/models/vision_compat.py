"""torchvision's pure-Python parts (models, transforms) beside the CPU torch this project pins.

PyPI's only Linux x86_64 wheel of torchvision 0.28.0 (the release for torch 2.13.0) is built for CUDA 13:
its compiled ops (`torchvision/_C.so`) link `libc10_cuda.so` and `libtorch_cuda.so`, which the CPU torch
2.13.0+cpu does not ship, so they do not load. torchvision tolerates that for most ops, but its
`_meta_registrations.py` calls `torch.library.register_fake("torchvision::nms")` (and `qnms`) without
checking, and `import torchvision` fails with `RuntimeError: operator torchvision::nms does not exist`.

`load()` imports torchvision as it is; only when that fails for exactly this reason does it declare the
missing operator schemas (with a kernel that raises, saying why) and import again. Models such as
ResNet-18 then work; compiled ops without a Python fallback (`torchvision.ops.nms`, ...) raise if called.
"""

from __future__ import annotations

import re
import sys
from types import ModuleType

import torch

# The schemas torchvision's _C declares for the ops its _meta_registrations.py registers fakes for unguarded.
SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
MISSING_OP = re.compile(r"operator torchvision::(\w+) does not exist")

_library: torch.library.Library | None = None  # kept alive: a Library's registrations go when it is collected


def _compiled_ops_unavailable(*args: object, **kwargs: object) -> torch.Tensor:
    raise RuntimeError("torchvision's compiled ops did not load beside this torch (see tasks/models/vision_compat.py)")


def _declare() -> None:
    global _library
    if _library is None:
        _library = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, name):
            _library.define(schema)
            _library.impl(name, _compiled_ops_unavailable, "CompositeExplicitAutograd")


def load() -> ModuleType:
    """`import torchvision`, declaring the compiled ops' schemas first if their library did not load."""
    try:
        import torchvision
    except RuntimeError as exc:
        extension = sys.modules.get("torchvision.extension")
        missing = MISSING_OP.search(str(exc))
        if missing is None or missing.group(1) not in SCHEMAS or extension is None or extension._has_ops():
            raise  # another failure, or a torchvision release whose needs this module does not know
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]  # the half-imported package: imported again below, from the start
        _declare()
        import torchvision
    return torchvision


def unavailable() -> str | None:
    """Why torchvision cannot be used here (one line), or None."""
    import importlib.util

    if importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed (pip install -e '.[vision]')"
    try:
        load()
    except Exception as exc:  # a torchvision built for another torch, in a way load() does not mend
        return (
            f"torchvision does not import beside this torch ({type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:160]})"
        )
    return None
