"""User-given paths, confined to the configured roots.

A dataset path is resolved (symlinks followed) before it is checked, so a link
inside a root that points outside it is refused like the outside path itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from server.errors import invalid_argument, not_found, permission_denied

SYNTHETIC = "synthetic"


DATASET_ROOTS_HINT = "add its folder to TANDEM_DATASET_ROOTS or --dataset-root"
MODEL_ROOTS_HINT = "add its folder to TANDEM_MODEL_ROOTS"


def resolve_under_roots(
    spec: str, roots: Sequence[Path], *, what: str, hint: str = DATASET_ROOTS_HINT
) -> Path:
    """The real path of `spec` (relative ones resolve under the first root), which must
    exist and lie inside one of `roots`."""
    if not spec.strip():
        raise invalid_argument(f"{what} is required")
    if "\x00" in spec:
        raise invalid_argument(f"{what} contains a NUL character")
    try:
        path = Path(spec).expanduser()
        if not path.is_absolute():
            if not roots:
                raise invalid_argument(f"{what} {spec!r} is relative and no root is configured")
            path = roots[0] / path
        real = path.resolve()
        exists = real.exists()
    except RuntimeError as exc:  # unknown ~user, symlink loop
        raise invalid_argument(f"{what} {spec!r} cannot be resolved: {exc}") from None
    except OSError as exc:
        raise permission_denied(f"{what} {spec!r} cannot be read: {exc.strerror}") from None
    if not exists:
        raise not_found(f"{what} {spec!r} does not exist")
    if not any(real.is_relative_to(root) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise permission_denied(f"{what} {spec!r} is outside the allowed roots ({allowed}); {hint}")
    return real
