"""Versioned artifact store.

A version is a directory ``ROOT/<version>/`` holding artifact files and a ``manifest.json``
written last. The manifest lists the sha256 of every file, so a version is either complete and
intact or refused. Versions are staged in a hidden temporary directory and renamed into place,
so a crash mid-write never leaves a directory that looks like a version. ``ROOT/active/<kind>``
names the version served for each kind (``index``, ``decoder``), replaced atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, Field

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


class StoreError(Exception):
    """A version is missing, partial, corrupt or of the wrong kind."""


class Manifest(BaseModel):
    kind: str
    version: str
    created: str
    config: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="relative path -> sha256 hex digest")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write then rename, so a reader (or a resumed run) sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    os.replace(tmp, path)


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------------
    @contextmanager
    def new_version(self, kind: str, config: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yield a staging directory; on clean exit, seal it with a manifest and publish it.

        On an exception the staging directory is removed and nothing becomes visible.
        The sealed version id is available afterwards as ``self.last_version``.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        created = datetime.now(timezone.utc)
        version = f"{kind}-{created:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        staging = self.root / f".staging-{version}"
        staging.mkdir()
        try:
            yield staging
            files = {
                str(p.relative_to(staging)): sha256_file(p)
                for p in sorted(staging.rglob("*"))
                if p.is_file()
            }
            manifest = Manifest(
                kind=kind,
                version=version,
                created=created.isoformat(),
                config=config or {},
                files=files,
            )
            (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
            os.replace(staging, self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.last_version = version

    def install(self, manifest: Manifest, write: Callable[[Path], None]) -> "Version":
        """Add a version sealed elsewhere (e.g. fetched from Redis) under its own id and manifest.

        ``write(staging)`` puts the files in place; every checksum is verified before the version
        becomes visible, so a corrupt or truncated copy raises StoreError and leaves nothing. A
        version already present is verified and returned as it is.
        """
        target = self.root / manifest.version
        if target.is_dir():
            return self.open(manifest.version, kind=manifest.kind)
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f".staging-{manifest.version}-{secrets.token_hex(3)}"
        staging.mkdir()
        try:
            write(staging)
            (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2))
            Version.verify(staging, manifest)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return self.open(manifest.version, kind=manifest.kind)

    def activate(self, kind: str, version: str) -> None:
        self.open(version, kind=kind)  # refuse to point at a broken version
        active = self.root / "active"
        active.mkdir(parents=True, exist_ok=True)
        atomic_write(active / kind, version + "\n")

    # -- reading -----------------------------------------------------------------------------
    def active(self, kind: str) -> str | None:
        path = self.root / "active" / kind
        return path.read_text().strip() if path.exists() else None

    def versions(self, kind: str | None = None) -> list[Manifest]:
        """Sealed versions, oldest first (unverified: use ``open`` before trusting files)."""
        out = []
        if not self.root.exists():
            return out
        for d in self.root.iterdir():
            m = d / MANIFEST
            if d.name.startswith(".") or not m.is_file():
                continue
            try:
                manifest = Manifest.model_validate_json(m.read_text())
            except ValueError:
                continue
            if kind is None or manifest.kind == kind:
                out.append(manifest)
        return sorted(out, key=lambda m: (m.created, m.version))

    def latest(self, kind: str) -> str | None:
        versions = self.versions(kind)
        return versions[-1].version if versions else None

    def resolve(self, kind: str, version: str | None = None) -> str:
        """The explicit version, else the active one, else the newest; error if none."""
        v = version or self.active(kind) or self.latest(kind)
        if v is None:
            raise StoreError(f"no {kind} version in store {self.root}")
        return v

    def open(self, version: str, kind: str | None = None) -> "Version":
        """Verify every checksum of a version and return a handle to its files."""
        path = self.root / version
        if not path.is_dir():
            raise StoreError(f"version {version!r} not found in store {self.root}")
        mpath = path / MANIFEST
        if not mpath.is_file():
            raise StoreError(f"version {version!r} is partial: it has no {MANIFEST}")
        try:
            manifest = Manifest.model_validate_json(mpath.read_text())
        except ValueError as e:
            raise StoreError(f"version {version!r} has an unreadable manifest: {e}") from e
        if kind is not None and manifest.kind != kind:
            raise StoreError(f"version {version!r} is a {manifest.kind!r}, not a {kind!r}")
        Version.verify(path, manifest)
        return Version(path=path, manifest=manifest)


class Version:
    """A verified version: its directory and manifest."""

    def __init__(self, path: Path, manifest: Manifest):
        self.path = path
        self.manifest = manifest

    @staticmethod
    def verify(path: Path, manifest: Manifest) -> None:
        """StoreError unless ``path`` holds exactly the manifest's files with their checksums."""
        version = manifest.version
        present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {MANIFEST}
        missing = sorted(set(manifest.files) - present)
        if missing:
            raise StoreError(f"version {version!r} is partial: missing {', '.join(missing)}")
        extra = sorted(present - set(manifest.files))
        if extra:
            raise StoreError(f"version {version!r} has files not in its manifest: {', '.join(extra)}")
        for name, digest in manifest.files.items():
            if sha256_file(path / name) != digest:
                raise StoreError(f"version {version!r} is corrupt: checksum mismatch in {name}")

    @property
    def id(self) -> str:
        return self.manifest.version

    def file(self, name: str) -> Path:
        if name not in self.manifest.files:
            raise StoreError(f"version {self.id!r} has no file {name!r}")
        return self.path / name

    def json(self, name: str) -> Any:
        return json.loads(self.file(name).read_text())
