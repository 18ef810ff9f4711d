"""Writing oracle folders so that no reader ever sees half of one, and installing them into the package.

Every writer (``prefrl oracle train``, ``correct-value``, ``install``) builds the new folder as a hidden
sibling of its target, ``.<name>.partial-<pid>-<random>`` (same parent, so the same filesystem), writes
``manifest.json`` last with ``"complete": true`` and the sha256 of every file (:func:`seal_oracle`), and
only then renames it into place (:func:`staged_oracle_dir`). A folder cannot be renamed over a non-empty
one, so an old target is first renamed aside (``.<name>.old-...``) and deleted after the swap: a reader
sees the old oracle, then (for an instant) none, then the new one, never a mix. A write that fails or is
interrupted deletes its partial folder and leaves the target as it was; one killed outright leaves a
``.partial`` folder that no loader reads (delete it at leisure).

``prefrl oracle install --env ENV [--from DIR]`` (:func:`install_oracle`, for maintainers) copies a
complete oracle, by default the user folder's, into ``prefrl/oracle/checkpoints/<name>/`` the same way,
then records its measured ``R_random`` / ``R_oracle`` in the env's YAML
(:func:`prefrl.envs.record_normalisation`). Nothing else writes the package tree.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from prefrl.envs import EnvSpec, load_env_spec, record_normalisation
from prefrl.errors import OracleError, SpecError
from prefrl.oracle.loading import (
    CORRECTION_FILE,
    MANIFEST,
    OracleManifest,
    env_argument,
    file_sha256,
    forget_oracle,
    is_shipped,
    read_manifest,
    shipped_oracle_dir,
    user_oracle_dir,
)

__all__ = ["copy_oracle_files", "install_oracle", "refuse_package_tree", "seal_oracle", "staged_oracle_dir"]

logger = logging.getLogger(__name__)


def seal_oracle(directory: Path, manifest: OracleManifest) -> OracleManifest:
    """Record the sha256 of every file the oracle uses and write ``manifest.json``, marked complete.

    The last write of any oracle folder. An accepted value correction must already name the expert it was
    fitted to (``value_correction["expert_sha256"]``) and that must be this folder's expert.
    """
    directory = Path(directory)
    files = {name: file_sha256(directory / name) for name in manifest.used_files()}
    if manifest.correction_accepted:
        fitted_to = (manifest.value_correction or {}).get("expert_sha256")
        if fitted_to != files[manifest.expert.file]:
            raise OracleError(
                f"the value correction in {directory} was fitted to another expert than its "
                f"{manifest.expert.file}; refit it with `prefrl oracle correct-value`"
            )
    sealed = replace(manifest, files=files, complete=True)
    sealed.save(directory)
    return sealed


def _partial_name(target: Path, kind: str) -> Path:
    return target.with_name(f".{target.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def _swap_into_place(staged: Path, target: Path) -> None:
    """Rename the complete folder ``staged`` to ``target``, replacing what was there."""
    old = None
    if target.exists() or target.is_symlink():
        old = _partial_name(target, "old")
        os.replace(target, old)
    try:
        os.replace(staged, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is None:
        return
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()


@contextmanager
def staged_oracle_dir(target: Path) -> Iterator[Path]:
    """A fresh folder beside ``target`` to write an oracle into; renamed to ``target`` when the block ends.

    The block must seal the folder (:func:`seal_oracle`); the swap checks it is one complete oracle
    first. If the block raises (Ctrl-C included) the partial folder is deleted and ``target`` untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = _partial_name(target, "partial")
    staged.mkdir()  # honours the umask (a package install stays readable by everyone)
    try:
        yield staged
        manifest = OracleManifest.from_dict(json.loads((staged / MANIFEST).read_text()))
        if not manifest.complete:
            raise RuntimeError(f"{staged} was not sealed before its swap into {target}")
        _swap_into_place(staged, target)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)
        forget_oracle(target)


def copy_oracle_files(manifest: OracleManifest, source: Path, destination: Path, correction: bool) -> None:
    """Copy the expert and skill-level files (and, with ``correction``, an accepted value correction)."""
    names = [name for name in manifest.used_files() if correction or name != CORRECTION_FILE]
    for name in names:
        shutil.copyfile(Path(source) / name, Path(destination) / name)


def refuse_package_tree(directory: Path, spec: EnvSpec) -> None:
    """Oracles are trained and corrected in user folders: the shipped tree is written by install only."""
    if is_shipped(directory):
        raise OracleError(
            f"{directory} is in the shipped checkpoints, which only `prefrl oracle install` writes; "
            f"write to a user folder (default {user_oracle_dir(spec)}), then "
            f"`prefrl oracle install --env {env_argument(spec)}`"
        )


def install_oracle(env: str | EnvSpec, source: Path | None = None) -> Path:
    """Copy a complete oracle into the shipped checkpoints and record its anchors in the env's YAML.

    :param source: the oracle folder to install (default: the env's user folder); refused unless complete.
    :returns: the shipped folder, ``prefrl/oracle/checkpoints/<name>/``.
    """
    spec = load_env_spec(env)
    source = Path(source) if source is not None else user_oracle_dir(spec)
    target = shipped_oracle_dir(spec)
    if source.resolve() == target.resolve():
        raise OracleError(f"{source} is already the shipped oracle of '{spec.name}': nothing to install")
    if not (source / MANIFEST).exists() and not (source.is_dir() and any(source.iterdir())):
        raise OracleError(
            f"nothing to install: no oracle for env '{spec.name}' in {source}; train one with "
            f"`prefrl oracle train --env {env_argument(spec)}` or pass --from DIR"
        )
    manifest = read_manifest(spec, source)  # refuses an incomplete or damaged source
    logger.info(f"{spec.name}: installing the oracle in {source} into {target}")
    with staged_oracle_dir(target) as staged:
        copy_oracle_files(manifest, source, staged, correction=True)
        sealed = seal_oracle(staged, manifest)
        if sealed.files != manifest.files:
            raise OracleError(f"the oracle in {source} changed while it was copied; install it again")
    try:
        record_normalisation(spec, manifest.random_return, manifest.oracle_return)
    except SpecError as e:
        raise OracleError(
            f"installed {target}, but its anchors (random {manifest.random_return:.2f}, oracle "
            f"{manifest.oracle_return:.2f}) were not recorded in the env spec: {e}"
        ) from None
    logger.info(
        f"{spec.name}: installed {target}; {spec.path} now anchors scores at random "
        f"{manifest.random_return:.2f}, oracle {manifest.oracle_return:.2f}"
    )
    return target
